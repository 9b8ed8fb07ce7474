//! The `BPF_PROG_TYPE_CGROUP_DEVICE` program for a [`RuleSet`]: the same instruction
//! layout runc's `devicefilter` (after crun's ebpf.c) emits, so its expected dumps
//! double as our test vectors.
//!
//! The program gets `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! in r1 (`access_type` = access bits << 16 | device type) and returns 1 to allow, 0
//! to deny (the kernel answers EPERM). Layout:
//!
//! ```text
//!   r2 = type, r3 = access, r4 = major, r5 = minor
//!   block i (one per exception): if type/access/major/minor do not match, jump to
//!           block i+1; else return !default
//!   last block: return default
//! ```

use super::rules::{ACC_ALL, Exception, RuleSet};

/// One eBPF instruction (`struct bpf_insn`, include/uapi/linux/bpf.h): `regs` holds
/// dst in the low and src in the high nibble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcode parts (include/uapi/linux/bpf_common.h, bpf.h).
pub const BPF_LDX: u8 = 0x01;
pub const BPF_ALU: u8 = 0x04;
pub const BPF_JMP: u8 = 0x05;
pub const BPF_W: u8 = 0x00;
pub const BPF_MEM: u8 = 0x60;
pub const BPF_K: u8 = 0x00;
pub const BPF_X: u8 = 0x08;
pub const BPF_AND: u8 = 0x50;
pub const BPF_RSH: u8 = 0x70;
pub const BPF_MOV: u8 = 0xb0;
pub const BPF_JNE: u8 = 0x50;
pub const BPF_EXIT: u8 = 0x90;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | dst,
            off,
            imm,
        }
    }
    pub fn dst(&self) -> u8 {
        self.regs & 0xf
    }
    pub fn src(&self) -> u8 {
        self.regs >> 4
    }
    /// dst = *(u32 *)(src + off)
    fn load_word(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
    }
    fn alu32_imm(op: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU | op | BPF_K, dst, 0, 0, imm)
    }
    fn mov32_reg(dst: u8, src: u8) -> Insn {
        Insn::new(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
    }
    /// if dst != imm goto +off
    fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JNE | BPF_K, dst, 0, off, imm)
    }
    /// if dst != src goto +off
    fn jne_reg(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JNE | BPF_X, dst, src, off, 0)
    }
    fn exit() -> Insn {
        Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
    }
}

/// Builds the program for `set`.
pub fn build(set: &RuleSet) -> Vec<Insn> {
    let mut insns = vec![
        // r2 = access_type & 0xffff (device type)
        Insn::load_word(R2, R1, 0),
        Insn::alu32_imm(BPF_AND, R2, 0xffff),
        // r3 = access_type >> 16 (access)
        Insn::load_word(R3, R1, 0),
        Insn::alu32_imm(BPF_RSH, R3, 16),
        // r4 = major, r5 = minor
        Insn::load_word(R4, R1, 4),
        Insn::load_word(R5, R1, 8),
    ];
    for e in &set.exceptions {
        insns.extend(block(e, !set.default_allow));
    }
    insns.push(Insn::alu32_imm(BPF_MOV, R0, set.default_allow as i32));
    insns.push(Insn::exit());
    insns
}

/// The checks of one exception; every failed check jumps past the block's end.
fn block(e: &Exception, verdict: bool) -> Vec<Insn> {
    // (instruction, is a jump to the next block)
    let mut body: Vec<(Insn, bool)> = vec![(Insn::jne_imm(R2, e.device.kind.into(), 0), true)];
    if e.access != ACC_ALL {
        // Every requested bit must be in the exception: (r3 & access) == r3, with r1
        // (the context pointer, no longer needed) as scratch.
        body.push((Insn::mov32_reg(R1, R3), false));
        body.push((Insn::alu32_imm(BPF_AND, R1, e.access.into()), false));
        body.push((Insn::jne_reg(R1, R3, 0), true));
    }
    if let Some(major) = e.device.major {
        // rules::resolve keeps numbers <= i32::MAX.
        body.push((Insn::jne_imm(R4, major as i32, 0), true));
    }
    if let Some(minor) = e.device.minor {
        body.push((Insn::jne_imm(R5, minor as i32, 0), true));
    }
    body.push((Insn::alu32_imm(BPF_MOV, R0, verdict as i32), false));
    body.push((Insn::exit(), false));
    let len = body.len();
    body.into_iter()
        .enumerate()
        .map(|(i, (mut insn, jump))| {
            if jump {
                // Offsets count from the next instruction; a block is a handful.
                insn.off = (len - i - 1) as i16;
            }
            insn
        })
        .collect()
}

/// Instructions as runc's dumps write them (`JNEImm dst: r2 off: -1 imm: 1 <block-1>`),
/// with the `block-N:` labels: runc's expected programs are test vectors for ours.
#[cfg(test)]
pub fn dump(insns: &[Insn]) -> String {
    use std::collections::BTreeMap;
    // Blocks start after the 6-instruction prologue and after every exit.
    let mut starts = BTreeMap::new();
    let mut next = 6;
    for (i, insn) in insns.iter().enumerate() {
        if i == next {
            starts.insert(i, starts.len());
        }
        if insn.code == BPF_JMP | BPF_EXIT {
            next = i + 1;
        }
    }
    let mut out = Vec::new();
    for (i, insn) in insns.iter().enumerate() {
        if let Some(b) = starts.get(&i) {
            out.push(format!("block-{b}:"));
        }
        let (d, s, imm) = (insn.dst(), insn.src(), insn.imm);
        let target = || starts[&((i as i64 + 1 + i64::from(insn.off)) as usize)];
        let text = match insn.code {
            c if c == BPF_LDX | BPF_MEM | BPF_W => {
                format!("LdXMemW dst: r{d} src: r{s} off: {} imm: 0", insn.off)
            }
            c if c == BPF_ALU | BPF_AND | BPF_K => format!("AndImm32 dst: r{d} imm: {imm}"),
            c if c == BPF_ALU | BPF_RSH | BPF_K => format!("RShImm32 dst: r{d} imm: {imm}"),
            c if c == BPF_ALU | BPF_MOV | BPF_K => format!("MovImm32 dst: r{d} imm: {imm}"),
            c if c == BPF_ALU | BPF_MOV | BPF_X => format!("MovReg32 dst: r{d} src: r{s}"),
            c if c == BPF_JMP | BPF_JNE | BPF_K => {
                format!("JNEImm dst: r{d} off: -1 imm: {imm} <block-{}>", target())
            }
            c if c == BPF_JMP | BPF_JNE | BPF_X => {
                format!("JNEReg dst: r{d} off: -1 src: r{s} <block-{}>", target())
            }
            c if c == BPF_JMP | BPF_EXIT => "Exit".to_string(),
            c => format!("unknown {c:#x}"),
        };
        out.push(format!("{i}: {text}"));
    }
    out.join("\n")
}
