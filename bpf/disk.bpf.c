// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Per-tenant disk bytes, ops and latency, charged to the blkcg that owns the
 * request (rq->bio->bi_blkg), not to the task that happens to be running:
 * completions run in interrupts and issues often in kernel workers. The tenant
 * is resolved once, at issue, where bytes and the op are counted; an in-flight
 * record keyed by the request carries it to the completion, which adds the
 * latency. Completion events can go missing (docs/disk.md), issue events never
 * did: nothing but latency depends on completions. */
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
#define FW_EEXIST 17 /* errno-base.h; vmlinux.h has no macros */

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

/* Request pointer -> the tenant request in flight in it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct fw_disk_inflight);
} inflight SEC(".maps");

/* Set by the agent right after attaching (CLOCK_MONOTONIC, as ktime): requests
 * allocated before it may have been issued unseen. Until then, all may have. */
__u64 attached_ns = ~0ULL;

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

enum fw_disk_stat {
	FW_STAT_LOST,
	FW_STAT_OTHER_OPS,
	FW_STAT_UNSEEN,
	FW_STAT_BEFORE_ATTACH,
	FW_STAT_FLUSH
};

static __always_inline void count_stat(enum fw_disk_stat which)
{
	__u32 zero = 0;
	struct fw_disk_stats *stats = bpf_map_lookup_elem(&disk_stats, &zero);

	if (!stats)
		return;
	/* Per-CPU value: no atomics needed. */
	if (which == FW_STAT_LOST)
		stats->lost_events++;
	else if (which == FW_STAT_OTHER_OPS)
		stats->other_ops++;
	else if (which == FW_STAT_UNSEEN)
		stats->completions_unseen++;
	else if (which == FW_STAT_BEFORE_ATTACH)
		stats->issued_before_attach++;
	else
		stats->empty_flushes++;
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

/* Request fields, read directly under tp_btf (trusted pointer) or with CO-RE probe
 * reads under raw_tp; `btf` is a constant at every call site. */
static __always_inline __u32 rq_cmd_flags(struct request *rq, bool btf)
{
	return btf ? rq->cmd_flags : BPF_CORE_READ(rq, cmd_flags);
}

static __always_inline __u32 rq_data_len(struct request *rq, bool btf)
{
	return btf ? rq->__data_len : BPF_CORE_READ(rq, __data_len);
}

static __always_inline struct cgroup *rq_owner(struct request *rq, bool btf)
{
	return btf ? rq_owner_btf(rq) : rq_owner_raw(rq);
}

/* The flush machinery's RQF_FLUSH_SEQ: an enum bit (enum rqf_flags) in recent
 * kernels, 1 << 4 where the RQF_ flags are still macros, which BTF does not carry. */
enum rqf_flags___fw { __RQF_FLUSH_SEQ___fw = 1 };

static __always_inline bool rq_in_flush_seq(struct request *rq, bool btf)
{
	__u32 flags = btf ? rq->rq_flags : BPF_CORE_READ(rq, rq_flags);
	__u32 bit = 4;

	if (bpf_core_enum_value_exists(enum rqf_flags___fw, __RQF_FLUSH_SEQ___fw))
		bit = bpf_core_enum_value(enum rqf_flags___fw, __RQF_FLUSH_SEQ___fw);
	return flags & (1u << bit);
}

/* Requests get an allocation time whenever I/O statistics or a scheduler are on
 * (blk_mq_need_time_stamp), else 0. */
static __always_inline __u64 rq_start_ns(struct request *rq, bool btf)
{
	if (!bpf_core_field_exists(rq->start_time_ns))
		return 0;
	return btf ? rq->start_time_ns : BPF_CORE_READ(rq, start_time_ns);
}

static __always_inline int on_issue(struct request *rq, bool btf)
{
	__u64 key = (__u64)rq, start_ns;
	struct fw_disk_inflight *prev, rec = {};
	struct fw_disk_counters *counters;
	int op = classify_op(rq_cmd_flags(rq, btf)), err;
	struct cgroup *owner;
	__u32 slot, data_len;

	/* Only data reads and writes of tenant cgroups are counted. */
	if (!op)
		return 0;
	owner = rq_owner(rq, btf);
	if (!owner)
		return 0;
	slot = tenant_slot(owner);
	if (slot == FW_NO_TENANT)
		return 0;
	rec.dev = rq_whole_disk(rq);
	counters = tenant_counters(slot, rec.dev);
	if (!counters) {
		count_stat(FW_STAT_LOST);
		return 0;
	}
	start_ns = rq_start_ns(rq, btf);
	rec.issue_ns = bpf_ktime_get_ns();
	rec.slot = slot;
	rec.start_time_ns = start_ns;
	/* Counted only with a record: without one a requeued request would count twice. */
	err = bpf_map_update_elem(&inflight, &key, &rec, BPF_NOEXIST);
	if (err == -FW_EEXIST) {
		prev = bpf_map_lookup_elem(&inflight, &key);
		/* Removed meanwhile (a stale record Collect took): insert after all. */
		if (!prev) {
			err = bpf_map_update_elem(&inflight, &key, &rec, BPF_ANY);
			goto charge;
		}
		/* Requeued and issued again: counted already, timed from this issue. */
		if (prev->state == FW_DISK_INFLIGHT_REQUEUED && prev->start_time_ns == start_ns) {
			prev->state = FW_DISK_INFLIGHT_ISSUED;
			prev->issue_ns = rec.issue_ns;
			return 0;
		}
		/* The struct carries a new request: the last one completed unseen. */
		if (prev->state != FW_DISK_INFLIGHT_FLUSHING)
			count_stat(FW_STAT_UNSEEN);
		*prev = rec;
		err = 0;
	}
charge:
	if (err) {
		count_stat(FW_STAT_LOST);
		return 0;
	}
	data_len = rq_data_len(rq, btf);
	if (op == 1) {
		counters->read_bytes += data_len;
		counters->read_ops++;
	} else {
		counters->write_bytes += data_len;
		counters->write_ops++;
	}
	return 0;
}

/* bio->bi_bdev since 5.12 (309dca309fc3, "block: store a block_device pointer in
 * struct bio"); before, the disk hung off the bio. */
struct bio___old {
	struct gendisk *bi_disk;
} __attribute__((preserve_access_index));

static __always_inline __u32 bio_whole_disk(struct bio *bio)
{
	struct bio___old *old = (void *)bio;
	struct gendisk *disk;

	if (bpf_core_field_exists(old->bi_disk))
		disk = BPF_CORE_READ(old, bi_disk);
	else
		disk = BPF_CORE_READ(bio, bi_bdev, bd_disk);
	if (!disk)
		return 0;
	return BPF_CORE_READ(disk, major) << FW_DISK_MINOR_BITS |
	       (BPF_CORE_READ(disk, first_minor) & FW_DISK_MINOR_MASK);
}

/* An empty PREFLUSH write (fsync) is never issued itself, only the flush it waits
 * for is, and the kernel counts it as a write op: count it when its request is
 * allocated, in the submitter's context. */
static __always_inline int on_getrq(struct bio *bio)
{
	struct fw_disk_counters *counters;
	__u32 opf = BPF_CORE_READ(bio, bi_opf), slot;
	struct cgroup *owner;

	if ((opf & FW_REQ_OP_MASK) != FW_REQ_OP_WRITE ||
	    !(opf & (1u << bpf_core_enum_value(enum req_flag_bits, __REQ_PREFLUSH))) ||
	    BPF_CORE_READ(bio, bi_iter.bi_size))
		return 0;
	owner = BPF_CORE_READ(bio, bi_blkg, blkcg, css.cgroup);
	if (!owner)
		return 0;
	slot = tenant_slot(owner);
	if (slot == FW_NO_TENANT)
		return 0;
	counters = tenant_counters(slot, bio_whole_disk(bio));
	if (!counters) {
		count_stat(FW_STAT_LOST);
		return 0;
	}
	counters->write_ops++;
	count_stat(FW_STAT_FLUSH);
	return 0;
}

static __always_inline int on_requeue(struct request *rq)
{
	__u64 key = (__u64)rq;
	struct fw_disk_inflight *rec = bpf_map_lookup_elem(&inflight, &key);

	if (rec)
		rec->state = FW_DISK_INFLIGHT_REQUEUED;
	return 0;
}

/* A finished data request without an in-flight record. */
static __always_inline int complete_unrecorded(struct request *rq, bool btf, __u64 start_ns)
{
	struct cgroup *owner;

	/* Carried no data: an empty PREFLUSH write, counted when it was allocated. */
	if (!rq_data_len(rq, btf))
		return 0;
	/* Not a tenant's; or allocated before attach, so issued unseen: count those. */
	if (start_ns >= attached_ns)
		return 0;
	owner = rq_owner(rq, btf);
	if (owner && tenant_slot(owner) != FW_NO_TENANT)
		count_stat(FW_STAT_BEFORE_ATTACH);
	return 0;
}

static __always_inline int on_complete(struct request *rq, bool btf, __u32 nr_bytes)
{
	__u64 key = (__u64)rq, start_ns, now, from;
	struct fw_disk_counters *counters;
	struct fw_disk_key ckey = {};
	struct fw_disk_inflight *rec;
	/* A request can complete in parts; it is done when the rest fits in this part. */
	bool done = nr_bytes >= rq_data_len(rq, btf);

	if (!classify_op(rq_cmd_flags(rq, btf))) {
		if (done)
			count_stat(FW_STAT_OTHER_OPS);
		return 0;
	}
	/* Latency is sampled once per request, on its last part. */
	if (!done)
		return 0;
	rec = bpf_map_lookup_elem(&inflight, &key);
	start_ns = rq_start_ns(rq, btf);
	if (!rec)
		return complete_unrecorded(rq, btf, start_ns);
	/* A record left by an earlier request in this struct whose completion went unseen. */
	if (rec->start_time_ns != start_ns) {
		if (rec->state != FW_DISK_INFLIGHT_FLUSHING)
			count_stat(FW_STAT_UNSEEN);
		bpf_map_delete_elem(&inflight, &key);
		return complete_unrecorded(rq, btf, start_ns);
	}
	/* The flush machinery's final, 0-byte completion of a request timed already. */
	if (rec->state == FW_DISK_INFLIGHT_FLUSHING) {
		bpf_map_delete_elem(&inflight, &key);
		return 0;
	}
	now = bpf_ktime_get_ns();
	ckey.slot = rec->slot;
	ckey.dev = rec->dev;
	counters = bpf_map_lookup_elem(&disk_usage, &ckey);
	/* From the request's allocation where the kernel stamps it: the time it
	 * sat in the I/O scheduler behind others' requests is what a tenant
	 * waits for when a neighbour floods the disk. Else from its issue. */
	from = rec->start_time_ns && rec->start_time_ns <= rec->issue_ns ? rec->start_time_ns
									 : rec->issue_ns;
	if (counters)
		counters->latency[hist_bucket(now > from ? now - from : 0)]++;
	else
		/* The slot was cleared for a new tenant while this request was in flight. */
		count_stat(FW_STAT_LOST);
	/* Data done under a flush sequence (FUA without device support): it completes
	 * once more when the post-flush is done; keep the record to recognise that. */
	if (rq_in_flush_seq(rq, btf))
		rec->state = FW_DISK_INFLIGHT_FLUSHING;
	else
		bpf_map_delete_elem(&inflight, &key);
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(fw_disk_issue_btf, struct request *rq) { return on_issue(rq, true); }

/* block_getrq takes only the bio since 5.11 (before: queue, bio, rw); the agent
 * loads these where the kernel's BTF says so. */
SEC("tp_btf/block_getrq")
int BPF_PROG(fw_disk_getrq_btf, struct bio *bio) { return on_getrq(bio); }

SEC("tp_btf/block_rq_requeue")
int BPF_PROG(fw_disk_requeue_btf, struct request *rq) { return on_requeue(rq); }

SEC("tp_btf/block_rq_complete")
int BPF_PROG(fw_disk_complete_btf, struct request *rq, int error, unsigned int nr_bytes)
{
	return on_complete(rq, true, nr_bytes);
}

/* Fallback for kernels without tp_btf (pre-5.5) or with it disabled. */
SEC("raw_tp/block_rq_issue")
int BPF_PROG(fw_disk_issue_raw, struct request *rq) { return on_issue(rq, false); }

SEC("raw_tp/block_getrq")
int BPF_PROG(fw_disk_getrq_raw, struct bio *bio) { return on_getrq(bio); }

SEC("raw_tp/block_rq_requeue")
int BPF_PROG(fw_disk_requeue_raw, struct request *rq) { return on_requeue(rq); }

SEC("raw_tp/block_rq_complete")
int BPF_PROG(fw_disk_complete_raw, struct request *rq, int error, unsigned int nr_bytes)
{
	return on_complete(rq, false, nr_bytes);
}
