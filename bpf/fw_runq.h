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

/* Indexes of the per-CPU runq_stats array. */
enum fw_runq_stat {
	/* Enqueue not recorded: task storage or the pid hash was full. */
	FW_RUNQ_STAT_LOST = 0,
	FW_RUNQ_STAT_MAX,
};

#endif
