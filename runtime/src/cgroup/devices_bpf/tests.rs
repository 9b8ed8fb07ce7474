//! The builder against runc's expected programs, and every program run through a tiny
//! eBPF interpreter against the v1 semantics of its rules.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType};

use super::{
    program::{self, *},
    rules::{self, *},
};

fn rule(typ: char, major: i64, minor: i64, access: &str, allow: bool) -> LinuxDeviceCgroup {
    let typ = match typ {
        'a' => LinuxDeviceType::A,
        'b' => LinuxDeviceType::B,
        'c' => LinuxDeviceType::C,
        'p' => LinuxDeviceType::P,
        _ => LinuxDeviceType::U,
    };
    LinuxDeviceCgroupBuilder::default()
        .typ(typ)
        .major(major)
        .minor(minor)
        .access(access)
        .allow(allow)
        .build()
        .unwrap()
}

/// Runs a device program the way the kernel would call it; panics on anything the
/// builder should never emit or on running off the end.
fn run(insns: &[Insn], kind: u8, access: u8, major: u32, minor: u32) -> u64 {
    let ctx = [(u32::from(access) << 16) | u32::from(kind), major, minor];
    let mut r = [0u64; 11];
    let mut ctx_valid = true; // r1 holds the context pointer until overwritten
    let mut pc = 0usize;
    loop {
        let insn = insns.get(pc).expect("ran past the end");
        let (d, s) = (insn.dst() as usize, insn.src() as usize);
        pc += 1;
        match insn.code {
            c if c == BPF_LDX | BPF_MEM | BPF_W => {
                assert!(s == 1 && ctx_valid, "loads only from the context");
                r[d] = u64::from(ctx[(insn.off / 4) as usize]);
            }
            c if c == BPF_ALU | BPF_AND | BPF_K => r[d] = u64::from(r[d] as u32 & insn.imm as u32),
            c if c == BPF_ALU | BPF_RSH | BPF_K => r[d] = u64::from((r[d] as u32) >> insn.imm),
            c if c == BPF_ALU | BPF_MOV | BPF_K => r[d] = u64::from(insn.imm as u32),
            c if c == BPF_ALU | BPF_MOV | BPF_X => r[d] = u64::from(r[s] as u32),
            // 64-bit compares against the sign-extended immediate.
            c if c == BPF_JMP | BPF_JNE | BPF_K => {
                if r[d] != insn.imm as i64 as u64 {
                    pc = (pc as i64 + i64::from(insn.off)) as usize;
                }
            }
            c if c == BPF_JMP | BPF_JNE | BPF_X => {
                if r[d] != r[s] {
                    pc = (pc as i64 + i64::from(insn.off)) as usize;
                }
            }
            c if c == BPF_JMP | BPF_EXIT => return r[0],
            c => panic!("unexpected opcode {c:#x}"),
        }
        if d == 1 && insn.code & 0x07 != BPF_JMP {
            ctx_valid = false;
        }
    }
}

/// Strips indentation and blank lines, so expected programs can be written readably.
fn lines(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

const PROLOGUE: &str = "
    0: LdXMemW dst: r2 src: r1 off: 0 imm: 0
    1: AndImm32 dst: r2 imm: 65535
    2: LdXMemW dst: r3 src: r1 off: 0 imm: 0
    3: RShImm32 dst: r3 imm: 16
    4: LdXMemW dst: r4 src: r1 off: 4 imm: 0
    5: LdXMemW dst: r5 src: r1 off: 8 imm: 0";

fn dump_of(rules: &[LinuxDeviceCgroup]) -> String {
    program::dump(&program::build(&rules::resolve(rules).unwrap()))
}

/// runc's devicefilter_test.go vectors (TestDeviceFilter_Nil, _Privileged,
/// _PrivilegedExceptSingleDevice, _Weird).
#[test]
fn small_programs_match_runc() {
    let cases: [(&str, Vec<LinuxDeviceCgroup>, &str); 4] = [
        (
            "no rules: deny all",
            vec![],
            "block-0:\n6: MovImm32 dst: r0 imm: 0\n7: Exit",
        ),
        (
            "a *:* rwm allow",
            vec![rule('a', -1, -1, "rwm", true)],
            "block-0:\n6: MovImm32 dst: r0 imm: 1\n7: Exit",
        ),
        (
            "allow all but b 8:0",
            vec![
                rule('a', -1, -1, "rwm", true),
                rule('b', 8, 0, "rwm", false),
            ],
            "block-0:
             6: JNEImm dst: r2 off: -1 imm: 1 <block-1>
             7: JNEImm dst: r4 off: -1 imm: 8 <block-1>
             8: JNEImm dst: r5 off: -1 imm: 0 <block-1>
             9: MovImm32 dst: r0 imm: 0
             10: Exit
             block-1:
             11: MovImm32 dst: r0 imm: 1
             12: Exit",
        ),
        (
            "a rule before `a` is forgotten (8:1 allowed, 8:2 not)",
            vec![
                rule('b', 8, 1, "rwm", false),
                rule('a', -1, -1, "rwm", true),
                rule('b', 8, 2, "rwm", false),
            ],
            "block-0:
             6: JNEImm dst: r2 off: -1 imm: 1 <block-1>
             7: JNEImm dst: r4 off: -1 imm: 8 <block-1>
             8: JNEImm dst: r5 off: -1 imm: 2 <block-1>
             9: MovImm32 dst: r0 imm: 0
             10: Exit
             block-1:
             11: MovImm32 dst: r0 imm: 1
             12: Exit",
        ),
    ];
    for (name, rules, body) in cases {
        assert_eq!(
            dump_of(&rules),
            lines(&format!("{PROLOGUE}\n{body}")),
            "{name}"
        );
    }
}

/// The default allow-list of runc's specconv (and of crust's spec), in runc's
/// order, gives runc's TestDeviceFilter_BuiltInAllowList program instruction for
/// instruction.
#[test]
fn builtin_allow_list_matches_runc() {
    let rules = vec![
        rule('c', -1, -1, "m", true),
        rule('b', -1, -1, "m", true),
        rule('c', 1, 3, "rwm", true),
        rule('c', 1, 8, "rwm", true),
        rule('c', 1, 7, "rwm", true),
        rule('c', 5, 0, "rwm", true),
        rule('c', 1, 5, "rwm", true),
        rule('c', 1, 9, "rwm", true),
        rule('c', 136, -1, "rwm", true),
        rule('c', 5, 2, "rwm", true),
        rule('c', 10, 200, "rwm", true),
    ];
    let mut expected = String::from(PROLOGUE);
    let mut n = 6;
    let mut block = 0;
    let mut push = |checks: &[String], n: &mut usize, block: &mut usize| {
        expected.push_str(&format!("\nblock-{block}:"));
        for c in checks {
            expected.push_str(&format!("\n{n}: {c}"));
            *n += 1;
        }
        expected.push_str(&format!("\n{n}: MovImm32 dst: r0 imm: 1\n{}: Exit", *n + 1));
        *n += 2;
        *block += 1;
    };
    for kind in [1, 2] {
        let next = block + 1;
        push(
            &[
                format!("JNEImm dst: r2 off: -1 imm: {kind} <block-{next}>"),
                "MovReg32 dst: r1 src: r3".into(),
                "AndImm32 dst: r1 imm: 1".into(),
                format!("JNEReg dst: r1 off: -1 src: r3 <block-{next}>"),
            ],
            &mut n,
            &mut block,
        );
    }
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(2)),
        (10, Some(200)),
        (136, None),
    ] {
        let next = block + 1;
        let mut checks = vec![
            format!("JNEImm dst: r2 off: -1 imm: 2 <block-{next}>"),
            format!("JNEImm dst: r4 off: -1 imm: {major} <block-{next}>"),
        ];
        if let Some(minor) = minor {
            checks.push(format!(
                "JNEImm dst: r5 off: -1 imm: {minor} <block-{next}>"
            ));
        }
        push(&checks, &mut n, &mut block);
    }
    expected.push_str(&format!(
        "\nblock-{block}:\n{n}: MovImm32 dst: r0 imm: 0\n{}: Exit",
        n + 1
    ));
    assert_eq!(dump_of(&rules), lines(&expected));
}

/// Rule lists as crust's spec and CRI users write them, each program checked against
/// the v1 answer for every device and access in a grid around the numbers used.
#[test]
fn programs_agree_with_v1_semantics() {
    let cases: Vec<(&str, Vec<LinuxDeviceCgroup>)> = vec![
        ("deny all", vec![rule('a', -1, -1, "rwm", false)]),
        (
            "crust default: deny, then the standard nodes and m on everything",
            vec![
                rule('a', -1, -1, "rwm", false),
                rule('c', -1, -1, "m", true),
                rule('b', -1, -1, "m", true),
                rule('c', 1, 3, "rwm", true),
                rule('c', 1, 5, "rwm", true),
                rule('c', 5, 0, "rwm", true),
                rule('c', 136, -1, "rwm", true),
            ],
        ),
        (
            "read-only block device and write-only char",
            vec![
                rule('a', -1, -1, "rwm", false),
                rule('b', 8, 0, "r", true),
                rule('c', 10, 200, "w", true),
                rule('c', 10, 200, "m", true),
            ],
        ),
        (
            "allow, then take part of it back",
            vec![
                rule('a', -1, -1, "", false),
                rule('c', 1, 3, "rwm", true),
                rule('c', 1, 3, "w", false),
            ],
        ),
        (
            "privileged with one hole",
            vec![
                rule('a', -1, -1, "rwm", true),
                rule('b', 8, -1, "rw", false),
                rule('c', -1, 7, "m", false),
            ],
        ),
        (
            "fifo rules are skipped",
            vec![
                rule('a', -1, -1, "rwm", false),
                rule('p', 1, 1, "rwm", true),
            ],
        ),
        (
            "u is a char device",
            vec![rule('a', -1, -1, "rwm", false), rule('u', 4, 1, "rw", true)],
        ),
    ];
    let numbers = [0u32, 1, 3, 4, 5, 7, 8, 10, 136, 200, 254];
    let accesses = [ACC_READ, ACC_WRITE, ACC_MKNOD, ACC_READ | ACC_WRITE];
    for (name, rules) in cases {
        let set = rules::resolve(&rules).unwrap();
        let insns = program::build(&set);
        for kind in [DEV_BLOCK, DEV_CHAR] {
            for major in numbers {
                for minor in numbers {
                    for access in accesses {
                        let want = set.allows(kind, major, minor, access);
                        assert_eq!(
                            run(&insns, kind, access, major, minor) == 1,
                            want,
                            "{name}: kind {kind} {major}:{minor} access {access}"
                        );
                    }
                }
            }
        }
    }
}

/// Spot checks of the semantics themselves (the reference above is only as good as
/// `allows`).
#[test]
fn v1_semantics_spot_checks() {
    let set = rules::resolve(&[
        rule('a', -1, -1, "rwm", false),
        rule('c', 1, 3, "rwm", true),
        rule('c', -1, -1, "m", true),
        rule('b', 8, 0, "r", true),
    ])
    .unwrap();
    for (kind, major, minor, access, want, what) in [
        (DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE, true, "/dev/null rw"),
        (DEV_CHAR, 1, 5, ACC_READ, false, "/dev/zero not listed"),
        (DEV_CHAR, 1, 5, ACC_MKNOD, true, "mknod of any char device"),
        (
            DEV_BLOCK,
            254,
            0,
            ACC_MKNOD,
            false,
            "no mknod of block devices",
        ),
        (DEV_BLOCK, 8, 0, ACC_READ, true, "sda read"),
        (DEV_BLOCK, 8, 0, ACC_WRITE, false, "sda not written"),
        (
            DEV_BLOCK,
            8,
            0,
            ACC_READ | ACC_WRITE,
            false,
            "sda not opened rw",
        ),
    ] {
        assert_eq!(set.allows(kind, major, minor, access), want, "{what}");
        assert_eq!(
            run(&program::build(&set), kind, access, major, minor) == 1,
            want,
            "program: {what}"
        );
    }
}

#[test]
fn refused_rules() {
    let hole = rules::resolve(&[
        rule('a', -1, -1, "rwm", false),
        rule('c', 1, -1, "rwm", true),
        rule('c', 1, 3, "w", false),
    ])
    .unwrap_err();
    assert!(matches!(hole, RuleError::WildcardHole { .. }), "{hole}");
    assert!(hole.to_string().contains("c 1:*"), "{hole}");
    let access = rules::resolve(&[rule('c', 1, 3, "rwx", true)]).unwrap_err();
    assert!(matches!(access, RuleError::Access { .. }), "{access}");
    let number = rules::resolve(&[rule('c', 1 << 40, 3, "rwm", true)]).unwrap_err();
    assert!(matches!(number, RuleError::Number { .. }), "{number}");
}
