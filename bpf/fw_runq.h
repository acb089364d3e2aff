/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Shared between runq.bpf.c and the agent: keep to fixed-width types. */
#ifndef FAIRWATCH_BPF_FW_RUNQ_H
#define FAIRWATCH_BPF_FW_RUNQ_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#include "fw_cpu.h"

/* Kernel histogram bucket b counts waits in [2^(b+FIRST), 2^(b+FIRST+1)) ns,
 * i.e. wire Log2Histogram index b + FIRST. The first bucket also holds
 * shorter waits, the last one longer waits: 256 ns .. 8.6 s. */
#define FW_RUNQ_HIST_FIRST_LOG2 8
#define FW_RUNQ_HIST_BUCKETS 26

/* Per tenant slot, per CPU. */
struct fw_runq_counters {
	__u64 wait_ns;
	__u64 waits;
	__u64 hist[FW_RUNQ_HIST_BUCKETS];
};

/* Who held a CPU while a tenant task waited there: a tenant slot, or one of
 * these. A holder equal to the waiter's slot is the waiter itself. */
#define FW_HOLDER_HOST 0xfffffffeu /* no tenant's task, or not known */
#define FW_HOLDER_IDLE 0xfffffffdu /* the idle task: wakeup latency */

/* runq_causes key: wait of `waiter` while `holder` ran; value: __u64 ns. */
struct fw_runq_cause_key {
	__u32 waiter;
	__u32 holder;
};

/* The last run segments of one CPU (who ran from when), newest at head; a
 * holder that runs again right after itself extends its segment. A wait is
 * split over the segments it overlaps; what precedes the oldest is split
 * like the part they cover. Power of two. */
#define FW_RUNQ_SEGMENTS 4

struct fw_runq_cpu {
	__u64 start[FW_RUNQ_SEGMENTS];
	__u32 holder[FW_RUNQ_SEGMENTS];
	__u32 head;
	__u32 pad;
};

/* Indexes of the per-CPU runq_stats array. */
enum fw_runq_stat {
	/* Enqueue not recorded: task storage or the pid hash was full. */
	FW_RUNQ_STAT_LOST = 0,
	/* A wait's cause not recorded: runq_causes was full. */
	FW_RUNQ_STAT_CAUSE_LOST,
	FW_RUNQ_STAT_MAX,
};

#endif
