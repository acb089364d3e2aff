// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Per-tenant run-queue wait: a task is stamped when it becomes runnable
 * (sched_wakeup, sched_wakeup_new, or preempted while still runnable at
 * sched_switch) and charged now - stamp when sched_switch picks it next. */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "core_fixes.bpf.h"
#include "fw_runq.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TASK_RUNNING 0

/* Attribute in the v1 cpu controller's hierarchy (hybrid hosts) instead of
 * the unified one; same choice as cpu.bpf.c. */
const volatile bool use_v1_cpu = false;

/* Bumped by the agent whenever tenant_roots changes; invalidates the memos. */
__u32 tenant_gen = 0;
/* Number of tenant roots: with none, every event returns at once. */
__u32 tenant_count = 0;
/* CLOCK_MONOTONIC ns when the programs were last attached (agent/runq_gate.h:
 * they are detached while the host is quiet). A stamp from before it was left
 * by an earlier attachment: the task was picked meanwhile unseen, so its wait
 * is not known and nothing is charged. */
__u64 trace_since_ns = 0;

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

/* tp_btf path: per-task memo of (cgroup id, gen) -> slot plus the enqueue
 * stamp, so a task not in any tenant costs one storage lookup. */
struct fw_runq_task {
	__u64 cgroup_id;
	__u64 enqueue_ns;
	__u32 slot;
	__u32 gen;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fw_runq_task);
} task_memo SEC(".maps");

/* raw_tp path (no trusted task pointer for task storage): pid -> stamp.
 * Only tenant tasks get an entry; the agent sizes it (1 on the tp_btf path).
 * LRU: a task woken while still running and then exiting leaves its entry
 * behind, and such leftovers must age out rather than fill the map. */
struct fw_runq_enqueued {
	__u64 enqueue_ns;
	__u32 slot;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct fw_runq_enqueued);
} enqueued_by_pid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_DEFAULT_MAX_TENANTS);
	__type(key, __u32);
	__type(value, struct fw_runq_counters);
} runq_usage SEC(".maps");

/* Wait split by who held the CPU meanwhile; an entry per pair that ever
 * interfered. The agent sizes it and deletes a slot's entries when the slot
 * changes hands. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8 * FW_DEFAULT_MAX_TENANTS);
	__type(key, struct fw_runq_cause_key);
	__type(value, __u64);
} runq_causes SEC(".maps");

/* Who ran on each CPU lately. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fw_runq_cpu);
} runq_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_RUNQ_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} runq_stats SEC(".maps");

/* task_struct::state became __state in 5.14 (2f064a59a11f, "sched: Change
 * task_struct::state"); both flavours so this builds against either BTF. */
struct task_struct___x {
	unsigned int __state;
} __attribute__((preserve_access_index));

struct task_struct___o {
	volatile long state;
} __attribute__((preserve_access_index));

/* tp_btf: the task pointer is trusted, so plain (relocated) loads work. */
static __always_inline long runq_task_state_btf(struct task_struct *task)
{
	struct task_struct___x *t = (void *)task;

	if (bpf_core_field_exists(t->__state))
		return t->__state;
	return ((struct task_struct___o *)task)->state;
}

static __always_inline long runq_task_state_raw(struct task_struct *task)
{
	struct task_struct___x *t = (void *)task;

	if (bpf_core_field_exists(t->__state))
		return BPF_CORE_READ(t, __state);
	return BPF_CORE_READ((struct task_struct___o *)task, state);
}

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

static __always_inline void count_stat(__u32 stat)
{
	__u64 *value = bpf_map_lookup_elem(&runq_stats, &stat);

	if (value)
		*value += 1;
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

/* Index of the kernel bucket for a wait: floor(log2(ns)) - FIRST, clamped. */
static __always_inline __u32 hist_bucket(__u64 ns)
{
	__u32 log2 = 0, shift;

	shift = (ns > 0xffffffffULL) << 5;
	ns >>= shift;
	log2 = shift;
	shift = (ns > 0xffff) << 4;
	ns >>= shift;
	log2 |= shift;
	shift = (ns > 0xff) << 3;
	ns >>= shift;
	log2 |= shift;
	shift = (ns > 0xf) << 2;
	ns >>= shift;
	log2 |= shift;
	shift = (ns > 0x3) << 1;
	ns >>= shift;
	log2 |= shift;
	log2 |= (ns >> 1);
	if (log2 < FW_RUNQ_HIST_FIRST_LOG2)
		return 0;
	log2 -= FW_RUNQ_HIST_FIRST_LOG2;
	return log2 < FW_RUNQ_HIST_BUCKETS ? log2 : FW_RUNQ_HIST_BUCKETS - 1;
}

static __always_inline void charge(__u32 slot, __u64 wait_ns)
{
	struct fw_runq_counters *counters;
	__u32 bucket;

	if (slot == FW_NO_TENANT)
		return;
	counters = bpf_map_lookup_elem(&runq_usage, &slot);
	if (!counters)
		return;
	/* Per-CPU value: no atomics needed. */
	counters->wait_ns += wait_ns;
	counters->waits++;
	bucket = hist_bucket(wait_ns);
	if (bucket < FW_RUNQ_HIST_BUCKETS)
		counters->hist[bucket]++;
}

static __always_inline void add_cause(__u32 waiter, __u32 holder, __u64 ns)
{
	struct fw_runq_cause_key key = {.waiter = waiter, .holder = holder};
	__u64 *value = bpf_map_lookup_elem(&runq_causes, &key);

	if (value) {
		*value += ns;
		return;
	}
	if (bpf_map_update_elem(&runq_causes, &key, &ns, BPF_NOEXIST))
		count_stat(FW_RUNQ_STAT_CAUSE_LOST);
}

/* A wait of `waiter` from t0 to now on this CPU: split over who ran
 * meanwhile, then `next_holder` holds the CPU (a new segment unless it
 * already held it). A wait longer than the segments kept (more than
 * FW_RUNQ_SEGMENTS changes of holder) has its earlier part split like the
 * part that is known: charged to the oldest holder alone, a host task that
 * switches often would take the blame for a hog's long turns. */
static __always_inline void switch_segment(__u32 waiter, __u64 t0, __u64 now, __u32 next_holder)
{
	__u32 zero = 0;
	struct fw_runq_cpu *cpu = bpf_map_lookup_elem(&runq_cpu, &zero);
	__u64 len[FW_RUNQ_SEGMENTS] = {};
	__u32 who[FW_RUNQ_SEGMENTS] = {};
	__u64 end = now, covered = 0, rest = 0, given = 0;
	__u32 head;
	int n = 0;

	if (!cpu)
		return;
	head = cpu->head & (FW_RUNQ_SEGMENTS - 1);
	if (waiter != FW_NO_TENANT && t0 && now > t0) {
		for (int i = 0; i < FW_RUNQ_SEGMENTS; i++) {
			__u32 k = (head - i) & (FW_RUNQ_SEGMENTS - 1);
			__u64 start = cpu->start[k];
			bool first = start <= t0 || !start;
			__u64 from = first ? t0 : start;

			who[i] = start ? cpu->holder[k] : FW_HOLDER_HOST;
			len[i] = end > from ? end - from : 0;
			covered += len[i];
			n = i + 1;
			if (first)
				break;
			if (i == FW_RUNQ_SEGMENTS - 1)
				rest = start - t0;
			end = start;
		}
		if (!covered) {
			/* Nothing known of the wait: the host's. */
			add_cause(waiter, FW_HOLDER_HOST, now - t0);
			rest = 0;
		}
		for (int i = 0; i < FW_RUNQ_SEGMENTS; i++) {
			__u64 part = 0;

			if (i >= n)
				break;
			if (rest) {
				if (i == n - 1) {
					part = rest - given;
				} else {
					/* Shares in 1/1024: no overflow for waits < 2^54 ns. */
					part = (rest * ((len[i] << 10) / covered)) >> 10;
					given += part;
				}
			}
			if (len[i] + part)
				add_cause(waiter, who[i], len[i] + part);
		}
	}
	if (cpu->start[head] && cpu->holder[head] == next_holder)
		return;
	head = (head + 1) & (FW_RUNQ_SEGMENTS - 1);
	cpu->start[head] = now;
	cpu->holder[head] = next_holder;
	cpu->head = head;
}

/* tp_btf: stamps a tenant task that just became runnable. */
static __always_inline void enqueue_btf(struct task_struct *task, __u64 now)
{
	struct cgroup *cgrp = task_cpu_cgroup_btf(task);
	struct fw_runq_task *memo;
	__u32 gen = tenant_gen;
	__u64 id;

	if (!cgrp)
		return;
	id = cgrp->kn->id;
	memo = bpf_task_storage_get(&task_memo, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!memo) {
		count_stat(FW_RUNQ_STAT_LOST);
		return;
	}
	/* The memo answers until the task changes cgroup or the tenant set changes. */
	if (memo->cgroup_id != id || memo->gen != gen) {
		memo->slot = tenant_slot(cgrp, id);
		memo->cgroup_id = id;
		memo->gen = gen;
	}
	if (memo->slot != FW_NO_TENANT)
		memo->enqueue_ns = now ? now : bpf_ktime_get_ns();
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(fw_runq_wakeup_btf, struct task_struct *task)
{
	if (tenant_count)
		enqueue_btf(task, 0);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(fw_runq_wakeup_new_btf, struct task_struct *task)
{
	if (tenant_count)
		enqueue_btf(task, 0);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(fw_runq_switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct fw_runq_task *memo;
	__u32 holder = FW_HOLDER_IDLE, waiter = FW_NO_TENANT;
	__u64 now, t0 = 0;

	if (!tenant_count)
		return 0;
	now = bpf_ktime_get_ns();
	/* A preempted prev (still TASK_RUNNING, not the idle task) queues again now. */
	if (prev->pid && runq_task_state_btf(prev) == TASK_RUNNING)
		enqueue_btf(prev, now);
	/* next waited since its stamp; no memo or no stamp: not a tenant task. */
	memo = bpf_task_storage_get(&task_memo, next, 0, 0);
	if (next->pid) {
		struct cgroup *cgrp = task_cpu_cgroup_btf(next);
		__u64 id = cgrp ? cgrp->kn->id : 0;

		if (memo && memo->cgroup_id == id && memo->gen == tenant_gen)
			holder = memo->slot;
		else
			holder = cgrp ? tenant_slot(cgrp, id) : FW_NO_TENANT;
		if (holder == FW_NO_TENANT)
			holder = FW_HOLDER_HOST;
	}
	if (memo && memo->enqueue_ns) {
		if (memo->enqueue_ns >= trace_since_ns) {
			t0 = memo->enqueue_ns;
			waiter = memo->slot;
			if (now > t0)
				charge(waiter, now - t0);
		}
		memo->enqueue_ns = 0;
	}
	switch_segment(waiter, t0, now, holder);
	return 0;
}

/* raw_tp fallback (no tp_btf, or it failed to load): pid hash, probe reads. */
static __always_inline void enqueue_raw(struct task_struct *task, __u64 now)
{
	struct cgroup *cgrp = task_cpu_cgroup_raw(task);
	struct fw_runq_enqueued entry = {};
	__u32 pid;

	if (!cgrp)
		return;
	entry.slot = tenant_slot(cgrp, fw_cgroup_id(cgrp));
	if (entry.slot == FW_NO_TENANT)
		return;
	pid = BPF_CORE_READ(task, pid);
	entry.enqueue_ns = now ? now : bpf_ktime_get_ns();
	if (bpf_map_update_elem(&enqueued_by_pid, &pid, &entry, BPF_ANY))
		count_stat(FW_RUNQ_STAT_LOST);
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(fw_runq_wakeup_raw, struct task_struct *task)
{
	if (tenant_count)
		enqueue_raw(task, 0);
	return 0;
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(fw_runq_wakeup_new_raw, struct task_struct *task)
{
	if (tenant_count)
		enqueue_raw(task, 0);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(fw_runq_switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct fw_runq_enqueued *entry;
	__u32 pid, holder = FW_HOLDER_IDLE, waiter = FW_NO_TENANT;
	__u64 now, t0 = 0;

	if (!tenant_count)
		return 0;
	now = bpf_ktime_get_ns();
	/* A preempted prev (still TASK_RUNNING, not the idle task) queues again now. */
	if (BPF_CORE_READ(prev, pid) && runq_task_state_raw(prev) == TASK_RUNNING)
		enqueue_raw(prev, now);
	pid = BPF_CORE_READ(next, pid);
	if (pid) {
		struct cgroup *cgrp = task_cpu_cgroup_raw(next);

		holder = cgrp ? tenant_slot(cgrp, fw_cgroup_id(cgrp)) : FW_NO_TENANT;
		if (holder == FW_NO_TENANT)
			holder = FW_HOLDER_HOST;
	}
	/* next waited since its stamp; no entry: not a tenant task. */
	entry = bpf_map_lookup_elem(&enqueued_by_pid, &pid);
	if (entry) {
		if (entry->enqueue_ns >= trace_since_ns) {
			t0 = entry->enqueue_ns;
			waiter = entry->slot;
			if (now > t0)
				charge(waiter, now - t0);
		}
		bpf_map_delete_elem(&enqueued_by_pid, &pid);
	}
	switch_segment(waiter, t0, now, holder);
	return 0;
}
