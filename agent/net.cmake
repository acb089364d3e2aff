# Network collector: tc on tenant interfaces, cgroup_skb on host-netns v2 tenants.
target_sources(fairwatch_agent_lib PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/net_collector.cc
  ${CMAKE_CURRENT_LIST_DIR}/net_interfaces.cc
  ${CMAKE_CURRENT_LIST_DIR}/rtnetlink.cc
  ${CMAKE_CURRENT_LIST_DIR}/uplinks.cc)
target_link_libraries(fairwatch_agent_lib PUBLIC net_bpf_skel)
