# What `make install` and the .deb put where (docs/operators.md, "Install").
# One package, `fairwatch`, holds both daemons and the CLI: every node needs
# the same version of the agent and of the protocol the controller speaks, an
# operator tracks one version, and neither unit is enabled at install, so a
# node runs what the operator enables (the agent everywhere, the controller
# on one node). The controller adds under 2 MB to an agent node.
include(GNUInstallDirs)
# `make install` and cpack take what is built and build nothing themselves
# (deploy/build.sh builds; the package test must not rebuild the tree).
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY TRUE)

install(TARGETS fairwatch-agent fairwatch-controller RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
install(TARGETS fairwatch RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# Absolute: /etc and /lib/systemd stay where Debian wants them whatever the
# prefix (the package's prefix is /usr).
install(FILES deploy/etc/agent.textproto deploy/etc/controller.textproto
        DESTINATION /etc/fairwatch PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES deploy/systemd/fairwatch-agent.service deploy/systemd/fairwatch-controller.service
        DESTINATION /lib/systemd/system)

set(_fw_doc ${CMAKE_INSTALL_DATADIR}/doc/fairwatch)
install(FILES README.md DESTINATION ${_fw_doc})
install(DIRECTORY docs/ DESTINATION ${_fw_doc} FILES_MATCHING PATTERN "*.md")
# Prometheus rules and scrape example, Grafana dashboard: examples to copy.
foreach(_dir prometheus grafana)
  if(EXISTS ${CMAKE_SOURCE_DIR}/deploy/${_dir})
    install(DIRECTORY deploy/${_dir}/ DESTINATION ${_fw_doc}/examples/${_dir})
  endif()
endforeach()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME fairwatch)
set(CPACK_PACKAGE_VENDOR "fairwatch")
set(CPACK_PACKAGE_CONTACT "fairwatch maintainers <fairwatch@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "hypervisor-side tenant fairness monitor: eBPF agent, controller and CLI")
set(CPACK_PACKAGE_DESCRIPTION
    "fairwatch measures every tenant of a shared host (libvirt VMs, cgroup units) with eBPF,\n\
finds the tenant that takes a disproportionate share while its neighbours suffer,\n\
throttles it through cgroup limits and releases it when it behaves, keeping a\n\
durable case record of every decision.\n\
This package holds fairwatch-agent, fairwatch-controller, the fairwatch CLI and\n\
their systemd units (not enabled at install).")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # fairwatch_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Shared libraries from dpkg-shlibdeps; the tools the agent runs, by hand:
# ip and tc shape tenant interfaces, passwd makes the controller's user.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "iproute2, passwd")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "libvirt-daemon-system, prometheus")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/deploy/debian/conffiles ${CMAKE_SOURCE_DIR}/deploy/debian/postinst
    ${CMAKE_SOURCE_DIR}/deploy/debian/prerm ${CMAKE_SOURCE_DIR}/deploy/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Packages are built from the release build; the sanitizer build is for tests.
set(CPACK_STRIP_FILES ON)
include(CPack)
