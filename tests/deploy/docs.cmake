# The operator guide's references, held to the code: docs/reference/policy.md
# against the config schema and the defaults the daemons fill in,
# docs/reference/metrics.md against what the daemons expose and what the
# Prometheus rules and Grafana dashboard use.
include(GoogleTest)
find_package(GTest REQUIRED)

foreach(_t config_reference_test metrics_reference_test)
  add_executable(${_t} ${CMAKE_CURRENT_LIST_DIR}/${_t}.cc)
  # fairwatch_proto comes with both libraries (the descriptors of
  # fairwatch.v1.ControllerConfig and AgentConfig).
  target_link_libraries(${_t} PRIVATE fairwatch_proto fairwatch_controller_lib fairwatch_agent_lib
                                      GTest::gtest_main)
  target_compile_definitions(${_t} PRIVATE FAIRWATCH_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  gtest_discover_tests(${_t} DISCOVERY_TIMEOUT 30 PROPERTIES LABELS "docs" TIMEOUT 60)
endforeach()
