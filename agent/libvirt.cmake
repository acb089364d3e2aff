# libvirt domains as tenants: the C API for the connection and events,
# libxml2 for the domain XML.
pkg_check_modules(LIBVIRT REQUIRED IMPORTED_TARGET libvirt>=7.0)
pkg_check_modules(LIBXML2 REQUIRED IMPORTED_TARGET libxml-2.0)
target_sources(fairwatch_agent_lib PRIVATE ${CMAKE_CURRENT_LIST_DIR}/libvirt_domain.cc
                                           ${CMAKE_CURRENT_LIST_DIR}/libvirt_source.cc
                                           ${CMAKE_CURRENT_LIST_DIR}/libvirt_tuning.cc)
target_link_libraries(fairwatch_agent_lib PUBLIC PkgConfig::LIBVIRT PkgConfig::LIBXML2)
