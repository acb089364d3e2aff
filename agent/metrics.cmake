target_sources(fairwatch_agent_lib PRIVATE ${CMAKE_CURRENT_LIST_DIR}/metrics.cc)
