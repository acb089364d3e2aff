# The .deb installed into a fresh Debian root (debootstrap; minutes, and the
# Debian mirror): binaries, shipped configs, maintainer scripts, units.
add_test(NAME Package.InstallIntoFreshRoot
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/package_install_test.sh ${CMAKE_BINARY_DIR})
set_tests_properties(Package.InstallIntoFreshRoot PROPERTIES
  LABELS "root;package" TIMEOUT 1500 SKIP_RETURN_CODE 77)
