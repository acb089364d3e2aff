# Harm signals: pure parsers and histogram math (no root), then root/BPF tests.
foreach(_t runq_histogram_test runq_gate_test cgroup_stats_parse_test)
  add_executable(${_t} ${_t}.cc)
  target_link_libraries(${_t} PRIVATE fairwatch_agent_lib GTest::gtest_main)
  gtest_discover_tests(${_t} DISCOVERY_TIMEOUT 30)
endforeach()

foreach(_t runq_harm_root_test runq_cost_root_test cgroup_stats_root_test)
  if(NOT EXISTS ${CMAKE_CURRENT_LIST_DIR}/${_t}.cc)
    continue()
  endif()
  add_executable(${_t} ${_t}.cc)
  target_link_libraries(${_t} PRIVATE fairwatch_agent_lib fairwatch_test_support GTest::gtest_main)
  gtest_discover_tests(${_t} DISCOVERY_TIMEOUT 30
                       PROPERTIES LABELS "root:bpf" TIMEOUT 120 RUN_SERIAL TRUE)
endforeach()

# The cost test runs the bench's pipe ping-pong from the same bin directory.
if(TARGET runq_cost_root_test)
  add_dependencies(runq_cost_root_test pipe_pingpong)
endif()
