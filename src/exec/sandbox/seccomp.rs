//! The RUN seccomp filter: what Docker's default profile refuses a container
//! without extra capabilities, written as a deny list (everything else is
//! allowed, so a system call newer than this list still works, as a build needs).
//! Refused calls fail with EPERM; `clone3` fails with ENOSYS so libc falls back
//! to `clone`, whose namespace flags can be checked (clone3's live in memory).
//! System calls of another ABI (32-bit x86, x32, 32-bit ARM) are not filtered
//! by this list, so they are refused wholesale.
//!
//! The BPF is ours rather than seccompiler's: that crate has one action for all
//! matches (we need EPERM and ENOSYS) and no way to refuse x32's number range.

use libc::{c_long, sock_filter};

/// `ptrace`, `process_vm_readv` and `process_vm_writev` stay allowed, as in
/// Docker on kernels since 4.8: the PID namespace leaves nothing of the host to trace.
const DENIED: &[c_long] = &[
    // Mounts and the root.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    // Namespaces (clone is checked by its flags below).
    libc::SYS_unshare,
    libc::SYS_setns,
    // Kernel modules, kexec, reboot, swap.
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    // Keyrings (not namespaced).
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    // Kernel introspection and tracing.
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_syslog,
    libc::SYS_lookup_dcookie,
    libc::SYS_fanotify_init,
    libc::SYS_kcmp,
    libc::SYS_pidfd_getfd,
    libc::SYS_process_madvise,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    // Host-wide settings.
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_vhangup,
    libc::SYS_nfsservctl,
    // File handles bypass the mount namespace.
    libc::SYS_open_by_handle_at,
    // NUMA policy (Docker wants CAP_SYS_NICE).
    libc::SYS_mbind,
    libc::SYS_set_mempolicy,
    libc::SYS_get_mempolicy,
    libc::SYS_set_mempolicy_home_node,
    libc::SYS_migrate_pages,
    libc::SYS_move_pages,
];

#[cfg(target_arch = "x86_64")]
const DENIED_ARCH: &[c_long] = &[
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_uselib,
    libc::SYS_ustat,
    libc::SYS_sysfs,
    libc::SYS__sysctl,
    174, // create_module
    177, // get_kernel_syms
    178, // query_module
    libc::SYS_getpmsg,
    libc::SYS_putpmsg,
    libc::SYS_afs_syscall,
    libc::SYS_tuxcall,
    libc::SYS_security,
    libc::SYS_vserver,
];
#[cfg(target_arch = "aarch64")]
const DENIED_ARCH: &[c_long] = &[];

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// x32 system calls come in as x86_64 ones with this bit set in the number.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (Docker's mask).
const CLONE_NAMESPACES: u32 = 0x7e02_0000;
/// `personality` values Docker allows: PER_LINUX, UNAME26, PER_LINUX32, both, and the query.
const PERSONALITIES: [u32; 5] = [0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];
const AF_VSOCK: u32 = 40;

// seccomp_data: nr (u32), arch (u32), instruction_pointer (u64), args (6 × u64).
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low 32 bits of the first argument (what an `int` or the flags above live in).
#[cfg(target_endian = "little")]
const ARG0_LOW: u32 = 16;
#[cfg(target_endian = "big")]
const ARG0_LOW: u32 = 20;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code: code as u16, jt, jf, k }
}

const LOAD: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const RET: u32 = libc::BPF_RET | libc::BPF_K;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const JGE: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
const JSET: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;

/// `if nr == number { return action }`, leaving the number loaded otherwise.
fn deny(program: &mut Vec<sock_filter>, number: c_long, action: u32) {
    program.push(jump(JEQ, number as u32, 0, 1));
    program.push(stmt(RET, action));
}

/// The filter program.
pub fn program() -> Vec<sock_filter> {
    let mut p = vec![stmt(LOAD, ARCH), jump(JEQ, AUDIT_ARCH, 1, 0), stmt(RET, RET_KILL), stmt(LOAD, NR)];
    #[cfg(target_arch = "x86_64")]
    {
        p.push(jump(JGE, X32_SYSCALL_BIT, 0, 1));
        p.push(stmt(RET, RET_EPERM));
    }
    for &number in DENIED.iter().chain(DENIED_ARCH) {
        deny(&mut p, number, RET_EPERM);
    }
    deny(&mut p, libc::SYS_clone3, RET_ENOSYS);
    // clone: refused when it asks for a namespace; ordinary forks and threads pass.
    p.push(jump(JEQ, libc::SYS_clone as u32, 0, 4));
    p.push(stmt(LOAD, ARG0_LOW));
    p.push(jump(JSET, CLONE_NAMESPACES, 0, 1));
    p.push(stmt(RET, RET_EPERM));
    p.push(stmt(RET, RET_ALLOW));
    // socket: no AF_VSOCK (it reaches the hypervisor's host).
    p.push(jump(JEQ, libc::SYS_socket as u32, 0, 4));
    p.push(stmt(LOAD, ARG0_LOW));
    p.push(jump(JEQ, AF_VSOCK, 0, 1));
    p.push(stmt(RET, RET_EPERM));
    p.push(stmt(RET, RET_ALLOW));
    // personality: only the values Docker allows.
    p.push(jump(JEQ, libc::SYS_personality as u32, 0, PERSONALITIES.len() as u8 + 3));
    p.push(stmt(LOAD, ARG0_LOW));
    for (i, value) in PERSONALITIES.iter().enumerate() {
        p.push(jump(JEQ, *value, (PERSONALITIES.len() - i) as u8, 0));
    }
    p.push(stmt(RET, RET_EPERM));
    p.push(stmt(RET, RET_ALLOW));
    p.push(stmt(RET, RET_ALLOW));
    p
}

/// Installs the filter on this process (needs no_new_privs or CAP_SYS_ADMIN).
pub fn install() -> Result<(), String> {
    let mut filter = program();
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies the program.
    let rc = unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program over one system call, as the kernel would (only the instructions we emit).
    fn verdict(arch: u32, nr: u32, arg0: u64) -> u32 {
        let program = program();
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        data[16..24].copy_from_slice(&arg0.to_ne_bytes());
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let ins = program[pc];
            let code = ins.code as u32;
            pc += 1;
            match code {
                LOAD => {
                    let at = ins.k as usize;
                    acc = u32::from_ne_bytes(data[at..at + 4].try_into().expect("4 bytes"));
                }
                RET => return ins.k,
                JEQ | JGE | JSET => {
                    let taken = match code {
                        JEQ => acc == ins.k,
                        JGE => acc >= ins.k,
                        _ => acc & ins.k != 0,
                    };
                    pc += if taken { ins.jt } else { ins.jf } as usize;
                }
                other => panic!("unexpected BPF instruction {other:#x}"),
            }
        }
    }

    fn call(nr: c_long, arg0: u64) -> u32 {
        verdict(AUDIT_ARCH, nr as u32, arg0)
    }

    #[test]
    fn docker_denied_calls_fail_with_eperm() {
        for nr in
            [libc::SYS_mount, libc::SYS_umount2, libc::SYS_pivot_root, libc::SYS_init_module, libc::SYS_finit_module].into_iter().chain([
                libc::SYS_keyctl,
                libc::SYS_bpf,
                libc::SYS_unshare,
                libc::SYS_setns,
                libc::SYS_sethostname,
                libc::SYS_open_by_handle_at,
            ])
        {
            assert_eq!(call(nr, 0), RET_EPERM, "syscall {nr}");
        }
    }

    #[test]
    fn ordinary_calls_and_forks_pass() {
        for nr in [libc::SYS_read, libc::SYS_openat, libc::SYS_execve, libc::SYS_ptrace, libc::SYS_chroot, libc::SYS_mknodat] {
            assert_eq!(call(nr, 0), RET_ALLOW, "syscall {nr}");
        }
        // glibc's fork and pthread_create.
        assert_eq!(call(libc::SYS_clone, (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64), RET_ALLOW);
        assert_eq!(call(libc::SYS_clone, 0x3d0f00), RET_ALLOW);
        assert_eq!(call(libc::SYS_socket, libc::AF_INET as u64), RET_ALLOW);
        assert_eq!(call(libc::SYS_personality, 0xffff_ffff), RET_ALLOW);
    }

    #[test]
    fn namespaces_vsock_and_odd_personalities_are_refused_and_clone3_is_unknown() {
        for flag in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWPID, libc::CLONE_NEWNET, libc::CLONE_NEWCGROUP] {
            assert_eq!(call(libc::SYS_clone, (flag | libc::SIGCHLD) as u64), RET_EPERM, "clone flag {flag:#x}");
        }
        assert_eq!(call(libc::SYS_clone3, 0), RET_ENOSYS);
        assert_eq!(call(libc::SYS_socket, AF_VSOCK as u64), RET_EPERM);
        assert_eq!(call(libc::SYS_personality, 0x0040_0000), RET_EPERM, "READ_IMPLIES_EXEC");
    }

    #[test]
    fn other_abis_are_refused() {
        assert_eq!(verdict(0x4000_0003, libc::SYS_read as u32, 0), RET_KILL, "i386");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(verdict(AUDIT_ARCH, X32_SYSCALL_BIT | libc::SYS_mount as u32, 0), RET_EPERM, "x32");
    }
}
