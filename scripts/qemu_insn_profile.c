/*
 * A QEMU TCG plugin for user-mode emulation (qemu-aarch64, QEMU 7.2 and later): counts the
 * executions of every translated block and, at every write(2) to standard output, writes the
 * counts since the previous write (one segment per line the program printed) and sets them
 * back to zero. Used by scripts/profile-aarch64.sh to say which functions run the
 * instructions between two lines.
 *
 *   cc -shared -fPIC -O2 -o qemu_insn_profile.so scripts/qemu_insn_profile.c
 *   qemu-aarch64 -plugin ./qemu_insn_profile.so,out=blocks.txt PROGRAM ARGS...
 *
 * blocks.txt: `segment K` before the counts that ran before the program's write number K
 * (from 0; the last segment runs to the exit), then one line `VADDR INSNS EXECUTIONS` per
 * block that ran (VADDR in hex: the guest address of its first instruction). Exact for a
 * single-threaded guest. The declarations of QEMU's plugin API it needs are in
 * scripts/qemu_plugin_api.h.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu_plugin_api.h"

struct block {
    uint64_t vaddr, insns, executions;
    struct block *next;
};

static struct block *blocks;
static FILE *out;
static int segment;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    struct block *b = calloc(1, sizeof *b);
    if (!b) {
        abort();
    }
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->insns = qemu_plugin_tb_n_insns(tb);
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->executions, 1);
}

static void dump(void)
{
    fprintf(out, "segment %d\n", segment++);
    for (struct block *b = blocks; b; b = b->next) {
        if (b->executions) {
            fprintf(out, "%llx %llu %llu\n", (unsigned long long)b->vaddr,
                    (unsigned long long)b->insns, (unsigned long long)b->executions);
            b->executions = 0;
        }
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    (void)id, (void)vcpu_index, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6, (void)a7,
        (void)a8;
    if (num == SYS_WRITE_AARCH64 && a1 == 1) {
        dump();
    }
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id, (void)userdata;
    dump();
    fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    const char *path = "blocks.txt";
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        }
    }
    out = fopen(path, "w");
    if (!out) {
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
