# Prometheus rules and the Grafana dashboard (deploy/prometheus, deploy/grafana)
# against what the daemons export.

# promtool's own checks: the rule file parses and lints, its unit tests (each
# alert fires on synthetic series, stays silent on healthy ones) pass, and the
# example scrape config is valid. Skipped (77) without promtool.
add_test(NAME Prometheus.CheckRules
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/check_prometheus_rules.sh
                 ${CMAKE_SOURCE_DIR}/deploy/prometheus)
set_tests_properties(Prometheus.CheckRules PROPERTIES LABELS deploy SKIP_RETURN_CODE 77 TIMEOUT 60)

add_library(fairwatch_monitoring_checks STATIC ${CMAKE_CURRENT_SOURCE_DIR}/monitoring_checks.cc)
target_include_directories(fairwatch_monitoring_checks PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(fairwatch_monitoring_checks PUBLIC fairwatch_proto absl::status
                      absl::statusor absl::strings)

# No root: every metric the rules and the dashboard read is rendered by the
# agent or the controller (sample data), the dashboard is sound, promtool
# lints the renders.
add_executable(monitoring_config_test ${CMAKE_CURRENT_SOURCE_DIR}/monitoring_config_test.cc)
target_compile_definitions(monitoring_config_test PRIVATE FW_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
target_link_libraries(monitoring_config_test PRIVATE fairwatch_monitoring_checks
                      fairwatch_e2e_support fairwatch_agent_lib fairwatch_controller_lib
                      GTest::gmock GTest::gtest_main)
gtest_discover_tests(monitoring_config_test DISCOVERY_TIMEOUT 30 TEST_PREFIX "Prometheus."
                     PROPERTIES LABELS deploy TIMEOUT 60)

# Root: the real daemons scraped by a real Prometheus with the rules loaded,
# the dashboard's queries run against it. One process, so both tests share
# one stack.
add_executable(prometheus_scrape_root_test ${CMAKE_CURRENT_SOURCE_DIR}/prometheus_scrape_root_test.cc
               ${CMAKE_SOURCE_DIR}/tests/e2e/harness.cc)
target_compile_definitions(prometheus_scrape_root_test PRIVATE
  FW_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
  FW_AGENT_BIN="$<TARGET_FILE:fairwatch-agent>"
  FW_CONTROLLER_BIN="$<TARGET_FILE:fairwatch-controller>"
  FW_CLI_BIN="$<TARGET_FILE:fairwatch>")
target_link_libraries(prometheus_scrape_root_test PRIVATE fairwatch_monitoring_checks
                      fairwatch_e2e_support fairwatch_test_support fairwatch_agent_lib
                      fairwatch_cli_lib GTest::gmock GTest::gtest_main)
add_dependencies(prometheus_scrape_root_test fairwatch-agent fairwatch-controller fairwatch)
add_test(NAME Prometheus.LiveScrapeRoot COMMAND prometheus_scrape_root_test)
set_tests_properties(Prometheus.LiveScrapeRoot PROPERTIES
  LABELS "root;bpf;e2e" TIMEOUT 240 RUN_SERIAL TRUE SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
