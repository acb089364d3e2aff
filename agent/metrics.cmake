# Debian ships cpp-httplib as a compiled library; its pkg-config carries the
# feature defines the library was built with, which the header must match.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
target_sources(fairwatch_agent_lib PRIVATE ${CMAKE_CURRENT_LIST_DIR}/metrics.cc)
target_link_libraries(fairwatch_agent_lib PUBLIC PkgConfig::HTTPLIB)
