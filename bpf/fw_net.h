/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Shared between net.bpf.c and the agent: keep to fixed-width types. */
#ifndef FAIRWATCH_BPF_FW_NET_H
#define FAIRWATCH_BPF_FW_NET_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Sizes the agent overrides at load; per-CPU arrays cost entries * CPUs. */
#define FW_NET_DEFAULT_MAX_TENANTS 4096
#define FW_NET_DEFAULT_MAX_IFACES 1024
/* Levels walked down from the root to find a socket's tenant cgroup. */
#define FW_NET_MAX_CGROUP_DEPTH 16
#define FW_NET_NO_TENANT 0xffffffffu

/* Our tc filters on clsact ingress/egress: fixed so a restarted agent finds
 * (and removes) the ones a dead agent left behind. tc priorities are 16 bit. */
#define FW_NET_TC_HANDLE 0x0000fa17u
#define FW_NET_TC_PRIORITY 0xfa17u
/* Program names (as the kernel keeps them, at most 15 characters) start with
 * this; reconcile only ever detaches filters whose program is named so. */
#define FW_NET_TC_PROG_PREFIX "fw_net_tc_"

/* Counters from the tenant's point of view: on a host-side veth/tap, packets
 * arriving at host ingress were sent by the tenant (tx). */
struct fw_net_counters {
	__u64 rx_bytes;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 tx_packets;
};

/* Cached result of the ancestor walk for one cgroup id; valid while gen
 * equals the program's tenant_gen. */
struct fw_net_cgroup_slot {
	__u32 slot;
	__u32 gen;
};

#endif
