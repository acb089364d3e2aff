add_executable(metrics_test ${CMAKE_CURRENT_LIST_DIR}/metrics_test.cc)
target_link_libraries(metrics_test PRIVATE fairwatch_agent_lib GTest::gtest_main)
gtest_discover_tests(metrics_test DISCOVERY_TIMEOUT 30)
