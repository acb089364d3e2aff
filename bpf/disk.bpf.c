// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Per-tenant disk bytes, ops and latency, counted when a request completes and
 * charged to the blkcg that owns it (rq->bio->bi_blkg), not to the task that
 * happens to be running: completions run in interrupts and issues often in
 * kernel workers. Only requests of tenant cgroups get an issue timestamp. */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "core_fixes.bpf.h"
#include "fw_disk.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* include/linux/blk_types.h: the op is the low REQ_OP_BITS (8) bits of cmd_flags;
 * READ = 0 and WRITE = 1 since 4.10. */
#define FW_REQ_OP_MASK 0xffu
#define FW_REQ_OP_READ 0u
#define FW_REQ_OP_WRITE 1u

/* Bumped by the agent whenever tenant_roots changes; invalidates the cache. */
__u32 tenant_gen = 0;

/* Tenant root cgroup id -> slot, ids of the blkcg's hierarchy (v1 blkio or unified). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FW_DEFAULT_MAX_TENANTS);
	__type(key, __u64);
	__type(value, __u32);
} tenant_roots SEC(".maps");

/* Any blkcg cgroup id seen -> its tenant slot (or FW_NO_TENANT). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct fw_cgroup_slot);
} cgroup_slots SEC(".maps");

/* Request pointer -> ktime of its last issue (a requeued request is issued again). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} issue_ns SEC(".maps");

/* (slot, device) -> counters. Entries appear on a tenant's first I/O to a device. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, FW_DEFAULT_MAX_TENANTS * 4);
	__type(key, struct fw_disk_key);
	__type(value, struct fw_disk_counters);
} disk_usage SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fw_disk_stats);
} disk_stats SEC(".maps");

/* Device -> data requests seen completing, all cgroups: the agent compares it
 * with /sys/block/<dev>/stat to estimate completions the programs never saw. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} device_done SEC(".maps");

static const struct fw_disk_counters zero_counters;

/* Before 5.17 (f3fa33acca9f, "block: remove the ->rq_disk field in struct
 * request") the disk hung off the request; since then it is rq->q->disk. */
struct request___old {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

static __always_inline struct gendisk *disk_fixes_rq_disk(struct request *rq)
{
	struct request___old *old = (void *)rq;

	if (bpf_core_field_exists(old->rq_disk))
		return BPF_CORE_READ(old, rq_disk);
	return BPF_CORE_READ(rq, q, disk);
}

/* Whole-disk dev_t: first_minor is the disk's, whatever partition was used. */
static __always_inline __u32 rq_whole_disk(struct request *rq)
{
	struct gendisk *disk = disk_fixes_rq_disk(rq);
	__u32 major, minor;

	if (!disk)
		return 0;
	major = BPF_CORE_READ(disk, major);
	minor = BPF_CORE_READ(disk, first_minor);
	return major << FW_DISK_MINOR_BITS | (minor & FW_DISK_MINOR_MASK);
}

/* 0 = not counted, 1 = read, 2 = write (zone append writes data too). */
static __always_inline int classify_op(__u32 cmd_flags)
{
	__u32 op = cmd_flags & FW_REQ_OP_MASK;

	if (op == FW_REQ_OP_READ)
		return 1;
	if (op == FW_REQ_OP_WRITE)
		return 2;
	if (bpf_core_enum_value_exists(enum req_op, REQ_OP_ZONE_APPEND) &&
	    op == bpf_core_enum_value(enum req_op, REQ_OP_ZONE_APPEND))
		return 2;
	return 0;
}

/* tp_btf: trusted request pointer, plain loads follow the owner chain. */
static __always_inline struct cgroup *rq_owner_btf(struct request *rq)
{
	struct bio *bio = rq->bio;
	struct blkcg_gq *blkg;

	if (!bio)
		return NULL;
	blkg = bio->bi_blkg;
	if (!blkg || !blkg->blkcg)
		return NULL;
	return blkg->blkcg->css.cgroup;
}

static __always_inline struct cgroup *rq_owner_raw(struct request *rq)
{
	struct blkcg_gq *blkg = BPF_CORE_READ(rq, bio, bi_blkg);

	if (!blkg)
		return NULL;
	return BPF_CORE_READ(blkg, blkcg, css.cgroup);
}

static __always_inline void count_stat(int which)
{
	__u32 zero = 0;
	struct fw_disk_stats *stats = bpf_map_lookup_elem(&disk_stats, &zero);

	if (!stats)
		return;
	/* Per-CPU value: no atomics needed. */
	if (which == 0)
		stats->lost_events++;
	else if (which == 1)
		stats->other_ops++;
	else
		stats->no_issue_time++;
}

static __always_inline __u32 tenant_slot(struct cgroup *cgrp)
{
	__u32 gen = tenant_gen;
	__u64 id = fw_cgroup_id(cgrp);
	struct fw_cgroup_slot *cached = bpf_map_lookup_elem(&cgroup_slots, &id);
	struct fw_cgroup_slot entry = {.slot = FW_NO_TENANT, .gen = gen};
	struct cgroup *cur = cgrp;

	if (cached && cached->gen == gen)
		return cached->slot;

	/* Walk up: I/O of a tenant's child cgroups counts for the tenant. */
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

static __always_inline __u32 hist_bucket(__u64 ns)
{
	__u32 hi = ns >> 32, v = hi ? hi : (__u32)ns, r, shift;

	/* Branch-free floor(log2(v)) as in libbpf-tools' bits.bpf.h. */
	r = (v > 0xFFFF) << 4;
	v >>= r;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	if (hi)
		r += 32;
	/* Clamp into [1 us, 17 s): the first and last buckets absorb the tails. */
	if (r < FW_DISK_HIST_SHIFT)
		return 0;
	r -= FW_DISK_HIST_SHIFT;
	return r < FW_DISK_HIST_BUCKETS ? r : FW_DISK_HIST_BUCKETS - 1;
}

static __always_inline int on_issue(struct request *rq, struct cgroup *owner, __u32 cmd_flags)
{
	__u64 key = (__u64)rq, now;

	/* Only data reads and writes of tenant cgroups are timed. */
	if (!owner || !classify_op(cmd_flags))
		return 0;
	if (tenant_slot(owner) == FW_NO_TENANT)
		return 0;
	/* Overwrite: a requeued request is timed from its last issue. */
	now = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&issue_ns, &key, &now, BPF_ANY))
		count_stat(0);
	return 0;
}

static __always_inline struct fw_disk_counters *tenant_counters(__u32 slot, __u32 dev)
{
	struct fw_disk_key key = {.slot = slot, .dev = dev};
	struct fw_disk_counters *counters = bpf_map_lookup_elem(&disk_usage, &key);

	if (counters)
		return counters;
	/* First I/O of this tenant on this device: a full map loses the event. */
	bpf_map_update_elem(&disk_usage, &key, &zero_counters, BPF_NOEXIST);
	return bpf_map_lookup_elem(&disk_usage, &key);
}

static __always_inline void count_device_done(__u32 dev)
{
	__u64 one = 1, *seen = bpf_map_lookup_elem(&device_done, &dev);

	if (seen)
		(*seen)++;
	else
		bpf_map_update_elem(&device_done, &dev, &one, BPF_NOEXIST);
}

static __always_inline int on_complete(struct request *rq, struct cgroup *owner, __u32 cmd_flags,
				       __u32 data_len, __u32 nr_bytes)
{
	__u64 key = (__u64)rq, *issued, now;
	struct fw_disk_counters *counters;
	int op = classify_op(cmd_flags);
	/* A request can complete in parts; it is done when the rest fits in this part. */
	bool done = nr_bytes >= data_len;
	__u32 slot, dev;

	if (!op) {
		if (done)
			count_stat(1);
		return 0;
	}
	dev = rq_whole_disk(rq);
	if (done)
		count_device_done(dev);
	if (!owner)
		return 0;
	slot = tenant_slot(owner);
	if (slot == FW_NO_TENANT)
		return 0;
	counters = tenant_counters(slot, dev);
	if (!counters) {
		count_stat(0);
		return 0;
	}
	/* Bytes on every completion event, ops and latency once per request. */
	if (op == 1)
		counters->read_bytes += nr_bytes;
	else
		counters->write_bytes += nr_bytes;
	if (!done)
		return 0;
	if (op == 1)
		counters->read_ops++;
	else
		counters->write_ops++;
	issued = bpf_map_lookup_elem(&issue_ns, &key);
	if (!issued) {
		count_stat(2);
		return 0;
	}
	now = bpf_ktime_get_ns();
	counters->latency[hist_bucket(now > *issued ? now - *issued : 0)]++;
	bpf_map_delete_elem(&issue_ns, &key);
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(fw_disk_issue_btf, struct request *rq)
{
	return on_issue(rq, rq_owner_btf(rq), rq->cmd_flags);
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(fw_disk_complete_btf, struct request *rq, int error, unsigned int nr_bytes)
{
	return on_complete(rq, rq_owner_btf(rq), rq->cmd_flags, rq->__data_len, nr_bytes);
}

/* Fallback for kernels without tp_btf (pre-5.5) or with it disabled. */
SEC("raw_tp/block_rq_issue")
int BPF_PROG(fw_disk_issue_raw, struct request *rq)
{
	return on_issue(rq, rq_owner_raw(rq), BPF_CORE_READ(rq, cmd_flags));
}

SEC("raw_tp/block_rq_complete")
int BPF_PROG(fw_disk_complete_raw, struct request *rq, int error, unsigned int nr_bytes)
{
	return on_complete(rq, rq_owner_raw(rq), BPF_CORE_READ(rq, cmd_flags),
			   BPF_CORE_READ(rq, __data_len), nr_bytes);
}
