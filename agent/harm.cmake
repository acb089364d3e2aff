# Harm signals: run-queue wait (runq.bpf.c), PSI and CFS throttling (cgroup files).
target_sources(fairwatch_agent_lib PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/cgroup_stats_collector.cc
  ${CMAKE_CURRENT_LIST_DIR}/runq_collector.cc
  ${CMAKE_CURRENT_LIST_DIR}/runq_gate.cc)
target_link_libraries(fairwatch_agent_lib PUBLIC runq_bpf_skel)
