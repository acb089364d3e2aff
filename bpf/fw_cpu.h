/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Shared between cpu.bpf.c and the agent: keep to fixed-width types. */
#ifndef FAIRWATCH_BPF_FW_CPU_H
#define FAIRWATCH_BPF_FW_CPU_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Tenant slots index the per-CPU counter array; the agent sizes it at load. */
#define FW_DEFAULT_MAX_TENANTS 4096
/* Levels walked up from a task's cgroup to find its tenant's root. */
#define FW_MAX_CGROUP_DEPTH 16
#define FW_NO_TENANT 0xffffffffu

/* Cached result of the ancestor walk for one cgroup id. Valid only while
 * gen equals the program's tenant_gen, which the agent bumps on every
 * change of the tenant set. */
struct fw_cgroup_slot {
	__u32 slot;
	__u32 gen;
};

struct fw_cpu_counters {
	__u64 usage_ns;
	__u64 events;
};

#endif
