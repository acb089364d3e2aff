# The .deb installed into a fresh Debian root (debootstrap; minutes, and the
# Debian mirror): binaries, shipped configs, maintainer scripts, units.
add_test(NAME Package.InstallIntoFreshRoot
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/package_install_test.sh ${CMAKE_BINARY_DIR})
set_tests_properties(Package.InstallIntoFreshRoot PROPERTIES
  LABELS "root;package" TIMEOUT 1500 SKIP_RETURN_CODE 77)

# Scenarios with the agent holding only its unit's capabilities.
foreach(_scenario net-hog disk-hog)
  add_test(NAME Package.AgentCapabilities.${_scenario}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/agent_caps_test.sh
                   $<TARGET_FILE_DIR:fairwatch-agent>
                   ${CMAKE_SOURCE_DIR}/deploy/systemd/fairwatch-agent.service ${_scenario})
  set_tests_properties(Package.AgentCapabilities.${_scenario} PROPERTIES
    LABELS "root;bpf;e2e;scenario;package" TIMEOUT 400 RUN_SERIAL TRUE SKIP_RETURN_CODE 77)
endforeach()
