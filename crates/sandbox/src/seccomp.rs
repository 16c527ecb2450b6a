//! The seccomp filter every bubblewrap step runs under: the system calls a build step never
//! needs and that widen the kernel's attack surface or reach outside the sandbox.
//!
//! Built once with `seccompiler` (rust-vmm's BPF compiler) and handed to bwrap as compiled
//! programs (`--add-seccomp-fd`); bwrap installs them, with `PR_SET_NO_NEW_PRIVS`, right before
//! it executes the step, so they bind every process of the step and cannot be removed.
//!
//! | denied | with | why |
//! |---|---|---|
//! | `mount`, `umount2`, `pivot_root`, the new mount API (`fsopen` … `mount_setattr`) | `EPERM` | no changes to the sandbox's file system view |
//! | `unshare`, `clone` with `CLONE_NEWUSER` | `EPERM` | no nested user namespace, where a step would get capabilities back (bwrap's `--disable-userns` also stops this) |
//! | `clone3` | `ENOSYS` | its flags sit behind a pointer a filter cannot read; `ENOSYS` makes libc fall back to `clone`, which is checked |
//! | `keyctl`, `add_key`, `request_key` | `EPERM` | kernel keyrings are not namespaced |
//! | `bpf`, `perf_event_open`, `userfaultfd`, `io_uring_*` | `EPERM` | frequent sources of kernel exploits; builds do not need them |
//! | `kexec_*`, `init_module`, `finit_module`, `delete_module`, `reboot`, `swapon`, `swapoff`, `acct` | `EPERM` | host-global |
//! | `ptrace`, `process_vm_readv`, `process_vm_writev` | `EPERM` | no tracing at all (simplest sound rule: a step cannot ptrace the runner nor anything else; debuggers and `strace` do not work in steps) |
//! | `open_by_handle_at`, `setns` | `EPERM` | handle-based opens bypass the mount view; no joining other namespaces |
//! | any other ABI (i386 `int 0x80`, x32) | killed / `EPERM` | a filter keyed on x86-64 numbers would not see those calls |
//!
//! Everything else is allowed: the filter is a deny list on top of the namespaces, the dropped
//! capabilities and the unprivileged uid, not the only wall.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

use crate::SandboxError;

/// The compiled programs, each as the raw bytes bwrap reads from its `--add-seccomp-fd`.
pub(crate) fn programs() -> Result<Vec<Vec<u8>>, SandboxError> {
    let arch = target_arch()?;
    let mut out = vec![
        bytes(&compile(denied_eperm(), libc::EPERM as u32, arch)?),
        bytes(&compile(
            BTreeMap::from([(libc::SYS_clone3, vec![])]),
            libc::ENOSYS as u32,
            arch,
        )?),
    ];
    if let Some(x32) = x32_guard() {
        out.push(bytes(&x32));
    }
    Ok(out)
}

fn target_arch() -> Result<TargetArch, SandboxError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| SandboxError::Unavailable {
        reason: format!("no seccomp filter for this architecture: {e}"),
    })
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: u32,
    arch: TargetArch,
) -> Result<BpfProgram, SandboxError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        arch,
    )
    .map_err(seccomp_err)?;
    BpfProgram::try_from(filter).map_err(seccomp_err)
}

fn seccomp_err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Unavailable {
        reason: format!("cannot build the seccomp filter: {e}"),
    }
}

/// Syscalls answered with `EPERM`; an empty rule list means "always".
fn denied_eperm() -> BTreeMap<i64, Vec<SeccompRule>> {
    let always = [
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_open_by_handle_at,
        libc::SYS_setns,
    ];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        always.into_iter().map(|nr| (nr, Vec::new())).collect();
    // unshare(flags) and clone(flags, ...): the flags are argument 0 on every supported arch.
    let newuser = || {
        SeccompRule::new(vec![
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(libc::CLONE_NEWUSER as u64),
                libc::CLONE_NEWUSER as u64,
            )
            .expect("a valid condition"),
        ])
        .expect("a valid rule")
    };
    rules.insert(libc::SYS_unshare, vec![newuser()]);
    rules.insert(libc::SYS_clone, vec![newuser()]);
    rules
}

/// On x86-64 the x32 ABI uses the same audit arch with bit 30 set in the syscall number, so the
/// number-keyed rules above would not match `mount | 0x40000000`. This 4-instruction program
/// refuses every x32 call (most kernels disable x32 anyway; this one does not have to).
fn x32_guard() -> Option<BpfProgram> {
    if std::env::consts::ARCH != "x86_64" {
        return None;
    }
    // BPF_LD | BPF_W | BPF_ABS (0x00 | 0x00 | 0x20)
    const LD_W_ABS: u16 = 0x20;
    const JGE_K: u16 = 0x05 | 0x30;
    const RET_K: u16 = 0x06;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    Some(vec![
        // A = seccomp_data.nr (offset 0)
        ins(LD_W_ABS, 0, 0, 0),
        // nr >= 0x40000000 → x32
        ins(JGE_K, 0, 1, 0x4000_0000),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ])
}

/// `struct sock_filter` as the kernel (and bwrap) read it: 8 bytes each, native endian.
fn bytes(program: &[sock_filter]) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for i in program {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_compile_on_this_arch() {
        let p = programs().unwrap();
        assert!(p.len() >= 2);
        for prog in &p {
            assert!(!prog.is_empty() && prog.len() % 8 == 0);
            // The kernel refuses programs longer than 4096 instructions.
            assert!(prog.len() / 8 < 4096);
        }
    }
}
