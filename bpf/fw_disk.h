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

/* Program-wide event accounting, one per CPU. */
struct fw_disk_stats {
	__u64 lost_events;   /* a map was full: counters or an issue time not recorded */
	__u64 other_ops;     /* flush, discard, write-zeroes, ...: not counted per tenant */
	__u64 no_issue_time; /* tenant request completed without a recorded issue */
};

#endif
