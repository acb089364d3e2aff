# Disk collector and block device tests; "disk." prefixes their ctest names, so
# `ctest -R disk` runs all of them.
add_executable(disk_block_devices_test disk_block_devices_test.cc)
target_link_libraries(disk_block_devices_test PRIVATE fairwatch_agent_lib GTest::gtest_main)
gtest_discover_tests(disk_block_devices_test TEST_PREFIX "disk." DISCOVERY_TIMEOUT 30)

add_executable(disk_accuracy_root_test disk_accuracy_root_test.cc)
target_link_libraries(disk_accuracy_root_test PRIVATE fairwatch_agent_lib fairwatch_test_support GTest::gtest_main)
gtest_discover_tests(disk_accuracy_root_test TEST_PREFIX "disk." DISCOVERY_TIMEOUT 30
  PROPERTIES LABELS "root:bpf" TIMEOUT 180 RUN_SERIAL TRUE)
