/*
 * A QEMU TCG plugin for user-mode emulation (qemu-aarch64, QEMU 7.2 and later): counts the
 * guest instructions executed and, at every write(2) to standard output, records how many
 * had run before it, so that a script can say how many instructions lay between two lines
 * a program printed. Used by scripts/bench-aarch64-instructions.sh.
 *
 *   cc -shared -fPIC -O2 -o qemu_insn_marks.so scripts/qemu_insn_marks.c
 *   qemu-aarch64 -plugin ./qemu_insn_marks.so,out=marks.txt PROGRAM ARGS...
 *
 * marks.txt: one line `write BYTES INSTRUCTIONS` per write to file descriptor 1 (BYTES its
 * length, INSTRUCTIONS the count before it), then `exit INSTRUCTIONS`. Counts are exact for
 * a single-threaded guest (the inline add is per translated block, not atomic across threads).
 *
 * The declarations of QEMU's plugin API it needs are in scripts/qemu_plugin_api.h (Debian
 * ships no header).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "qemu_plugin_api.h"

static uint64_t executed;
static FILE *marks;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed,
                                             qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    (void)id, (void)vcpu_index, (void)a2, (void)a4, (void)a5, (void)a6, (void)a7, (void)a8;
    if (num == SYS_WRITE_AARCH64 && a1 == 1) {
        fprintf(marks, "write %llu %llu\n", (unsigned long long)a3,
                (unsigned long long)executed);
    }
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id, (void)userdata;
    fprintf(marks, "exit %llu\n", (unsigned long long)executed);
    fclose(marks);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        }
    }
    if (path == NULL) {
        fprintf(stderr, "qemu_insn_marks: needs out=FILE\n");
        return -1;
    }
    marks = fopen(path, "w");
    if (marks == NULL) {
        perror(path);
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
