# libvirt tenant source: XML and cgroup mapping, and the source against
# libvirt's in-process test driver (no daemon, no root).
foreach(_t libvirt_domain_test libvirt_source_test)
  add_executable(${_t} ${_t}.cc)
  target_link_libraries(${_t} PRIVATE fairwatch_agent_lib GTest::gtest_main)
  gtest_discover_tests(${_t} DISCOVERY_TIMEOUT 30)
endforeach()
