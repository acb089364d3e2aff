// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Per-tenant CPU time from sched_stat_runtime: each event carries the ns the
 * task ran since the last update, so summing them per tenant equals the
 * kernel's own cpuacct/cpu.stat accounting. */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "core_fixes.bpf.h"
#include "fw_cpu.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Attribute in the v1 cpu controller's hierarchy (hybrid hosts) instead of
 * the unified one. */
const volatile bool use_v1_cpu = false;

/* Bumped by the agent whenever tenant_roots changes; invalidates the cache. */
__u32 tenant_gen = 0;

/* Tenant root cgroup id -> slot. Holds ids of one hierarchy only. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FW_DEFAULT_MAX_TENANTS);
	__type(key, __u64);
	__type(value, __u32);
} tenant_roots SEC(".maps");

/* Any cgroup id seen -> its tenant slot (or FW_NO_TENANT). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct fw_cgroup_slot);
} cgroup_slots SEC(".maps");

/* Per-task memo of (cgroup id, gen) -> slot: cheaper than a hash lookup on
 * the hot path. Only the tp_btf program has the trusted task it needs. */
struct fw_task_slot {
	__u64 cgroup_id;
	__u32 slot;
	__u32 gen;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fw_task_slot);
} task_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_DEFAULT_MAX_TENANTS);
	__type(key, __u32);
	__type(value, struct fw_cpu_counters);
} cpu_usage SEC(".maps");

/* tp_btf hands us a trusted task pointer: plain loads (with CO-RE relocations
 * from vmlinux.h's preserve_access_index) cost far less than probe reads. */
static __always_inline struct cgroup *task_cpu_cgroup_btf(struct task_struct *task)
{
	if (use_v1_cpu) {
		int id = bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id);
		struct cgroup_subsys_state *css = task->cgroups->subsys[id];

		return css ? css->cgroup : NULL;
	}
	return task->cgroups->dfl_cgrp;
}

static __always_inline struct cgroup *task_cpu_cgroup_raw(struct task_struct *task)
{
	if (use_v1_cpu) {
		int id = bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id);
		struct css_set *cset = BPF_CORE_READ(task, cgroups);
		struct cgroup_subsys_state *css = NULL;

		bpf_core_read(&css, sizeof(css), &cset->subsys[id]);
		return css ? BPF_CORE_READ(css, cgroup) : NULL;
	}
	return BPF_CORE_READ(task, cgroups, dfl_cgrp);
}

static __always_inline __u32 tenant_slot(struct cgroup *cgrp, __u64 id)
{
	__u32 gen = tenant_gen;
	struct fw_cgroup_slot *cached = bpf_map_lookup_elem(&cgroup_slots, &id);
	struct fw_cgroup_slot entry = {.slot = FW_NO_TENANT, .gen = gen};
	struct cgroup *cur = cgrp;

	if (cached && cached->gen == gen)
		return cached->slot;

	/* Walk up: threads in a tenant's child cgroups (vcpu0, emulator) count for it. */
	for (int depth = 0; depth < FW_MAX_CGROUP_DEPTH && cur; depth++) {
		__u64 cur_id = depth ? fw_cgroup_id(cur) : id;
		__u32 *slot = bpf_map_lookup_elem(&tenant_roots, &cur_id);

		if (slot) {
			entry.slot = *slot;
			break;
		}
		cur = fw_cgroup_parent(cur);
	}
	/* gen was read before the walk: a concurrent change makes this entry stale, not wrong. */
	bpf_map_update_elem(&cgroup_slots, &id, &entry, BPF_ANY);
	return entry.slot;
}

static __always_inline int charge(__u32 slot, __u64 runtime_ns)
{
	struct fw_cpu_counters *counters;

	if (slot == FW_NO_TENANT)
		return 0;
	counters = bpf_map_lookup_elem(&cpu_usage, &slot);
	if (!counters)
		return 0;
	/* Per-CPU value: no atomics needed. */
	counters->usage_ns += runtime_ns;
	counters->events++;
	return 0;
}

SEC("tp_btf/sched_stat_runtime")
int BPF_PROG(fw_cpu_runtime_btf, struct task_struct *task, __u64 runtime_ns)
{
	struct cgroup *cgrp = task_cpu_cgroup_btf(task);
	struct fw_task_slot *memo;
	__u32 gen = tenant_gen;
	__u64 id;
	__u32 slot;

	if (!cgrp)
		return 0;
	id = cgrp->kn->id;
	memo = bpf_task_storage_get(&task_slots, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (memo && memo->cgroup_id == id && memo->gen == gen)
		return charge(memo->slot, runtime_ns);
	slot = tenant_slot(cgrp, id);
	if (memo) {
		memo->cgroup_id = id;
		memo->slot = slot;
		memo->gen = gen;
	}
	return charge(slot, runtime_ns);
}

/* Fallback for kernels without tp_btf (pre-5.5) or with it disabled. */
SEC("raw_tp/sched_stat_runtime")
int BPF_PROG(fw_cpu_runtime_raw, struct task_struct *task, __u64 runtime_ns)
{
	struct cgroup *cgrp = task_cpu_cgroup_raw(task);

	if (!cgrp)
		return 0;
	return charge(tenant_slot(cgrp, fw_cgroup_id(cgrp)), runtime_ns);
}
