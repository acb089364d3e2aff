# Disk collector: per-tenant block I/O from bpf/disk.bpf.c, and the host's disks.
target_sources(fairwatch_agent_lib PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/block_devices.cc
  ${CMAKE_CURRENT_LIST_DIR}/disk_collector.cc)
target_link_libraries(fairwatch_agent_lib PUBLIC disk_bpf_skel)
