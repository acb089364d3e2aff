/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Shared between disk.bpf.c and the agent: keep to fixed-width types. */
#ifndef FAIRWATCH_BPF_FW_DISK_H
#define FAIRWATCH_BPF_FW_DISK_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#include "fw_cpu.h" /* FW_NO_TENANT, FW_MAX_CGROUP_DEPTH, struct fw_cgroup_slot */

/* Latency histogram: bucket b counts [2^(b+SHIFT), 2^(b+SHIFT+1)) ns, i.e.
 * 1 us .. 17 s. Shorter samples land in bucket 0, longer ones in the last
 * bucket. The agent shifts them to the wire's "bucket i = [2^i, 2^(i+1)) ns". */
#define FW_DISK_HIST_SHIFT 10
#define FW_DISK_HIST_BUCKETS 24

/* Device numbers as the kernel's MKDEV: major << 20 | minor. */
#define FW_DISK_MINOR_BITS 20
#define FW_DISK_MINOR_MASK ((1u << FW_DISK_MINOR_BITS) - 1)

struct fw_disk_key {
	__u32 slot;
	__u32 dev; /* whole disk: gendisk major and first_minor */
};

struct fw_disk_counters {
	__u64 read_bytes;
	__u64 write_bytes;
	__u64 read_ops;
	__u64 write_ops;
	__u64 latency[FW_DISK_HIST_BUCKETS];
};

/* A tenant request between issue and completion, keyed by its struct request
 * pointer. Bytes and the op are charged at issue; completion adds latency. */
struct fw_disk_inflight {
	__u64 issue_ns; /* ktime of the last issue (a requeued request is issued again) */
	/* rq->start_time_ns: tells this request from a later one in the same struct. */
	__u64 start_time_ns;
	__u32 slot; /* tenant resolved at issue */
	__u32 dev;
	__u32 state; /* FW_DISK_INFLIGHT_* */
	__u32 pad;
};

#define FW_DISK_INFLIGHT_ISSUED 0
/* Handed back to the queue: its next issue is not a new request. */
#define FW_DISK_INFLIGHT_REQUEUED 1
/* Data done, still in the flush machinery, which completes it once more with 0 bytes. */
#define FW_DISK_INFLIGHT_FLUSHING 2

/* Program-wide event accounting, one per CPU. */
struct fw_disk_stats {
	/* A map was full: a request not counted (no room for its counters or its
	 * in-flight record) or a latency sample not stored. */
	__u64 lost_events;
	__u64 other_ops; /* flush, discard, write-zeroes, ...: not counted per tenant */
	/* Tenant requests whose completion event never ran the program (found when the
	 * request struct was issued again): bytes and op were counted at issue, the
	 * latency sample is lost. */
	__u64 completions_unseen;
	/* Tenant requests already allocated when the programs attached and completing
	 * after: not counted, their issue was not seen. */
	__u64 issued_before_attach;
	/* Tenant empty PREFLUSH writes (fsync): a write op without bytes, never issued
	 * itself, so without a latency sample. */
	__u64 empty_flushes;
};

#endif
