// sevemu — THE opcode table (STYLE.md rule 10): one entry per opcode (and per group member)
// carries the mnemonic (disassembly), the decode shape (ModRM, immediate, size rules) and the
// handlers (dispatch), one per operand size and r/m kind. decode.cpp fills it from the
// per-family registration functions in the exec_*.cpp files.
#pragma once

#include "cpu/core.h"

namespace sevemu::cpu {

enum class Imm : uint8_t { None, B, SB, W, Z, V, Jb, Jz, Far, Moffs, WB };

enum : uint16_t {
    kModrm = 1,      // has a ModRM byte
    kByte = 2,       // operand size is 8 bits
    kDef64 = 4,      // operand size defaults to 64 in 64-bit mode (push/pop, near branches)
    kInv64 = 8,      // #UD in 64-bit mode
    kMemOnly = 16,   // #UD when ModRM.mod == 3
    kRegOnly = 32,   // #UD when ModRM.mod != 3
    kSrcByte = 64,   // r/m register operand is 8-bit (MOVZX/MOVSX Eb)
    kForce64 = 128,  // operand size is 64 in 64-bit mode whatever the prefixes (MOV CR, ...)
    kFixed16 = 256,  // operand size is always 16 (MOV Sreg, LLDT, ...)
    kVexW = 512,     // VEX: operand size from VEX.W (32/64)
    kEnd = 1024,     // control transfer: ends the decoded block
};

struct OpDef {
    char const* name {};
    uint16_t flags {};
    Imm imm { Imm::None };
    int16_t group { -1 };
    Handler h[4][2] {}; // [log2 size][mem]
};

enum OpMap : uint8_t {
    kMapPrimary, kMap0F, kMap0F38, kMap0F3A, kMapF30F, kMap660F, kMapF20F,
    kMapVex0F38, /* +pp: 7 none, 8 66, 9 F3, 10 F2 */ kMapVex0F3A = 11, kMap0F01Reg = 12,
    // Mandatory-prefix tables of the three-byte maps (SSSE3, SSE4.1, SSE4.2; CRC32 is F2 0F 38).
    kMap660F38, kMapF20F38, kMap660F3A, kNumMaps
};
enum : uint8_t { kNumGroups = 24 };

struct OpTables {
    OpDef map[kNumMaps][256];
    OpDef grp[kNumGroups][8];
};

OpTables const& op_tables();
void register_int_ops(OpTables&);
// The system architecture, one file per chapter of APM vol 2 (exec_sys.h):
void register_segment_ops(OpTables&); // exec_segments.cpp: segmentation, descriptor tables (ch 4)
void register_control_ops(OpTables&); // exec_control.cpp: CRn/DRn/EFER/XCR0, MSRs (ch 3)
void register_far_ops(OpTables&);     // exec_far.cpp: far transfers, call gates, SYSCALL (§4.8-4.13, §6.1)
void register_event_ops(OpTables&);   // exec_events.cpp: interrupts and exceptions, IRET (ch 8)
void register_io_ops(OpTables&);      // exec_io.cpp: port I/O and the I/O bitmap
void register_svm_ops(OpTables&);     // exec_svm.cpp: SVM instructions (ch 15)
void register_sse_ops(OpTables&);
void register_sse4_ops(OpTables&);
void register_x87_ops(OpTables&);

// Threaded dispatch: the handler H, then the block's bookkeeping that run()'s loop did (RIP
// advanced, the end of the block), then a tail call to the next instruction's handler. Each
// handler thus ends in an indirect jump of its own, which the host's predictor learns per
// handler (the next opcode correlates with this one); the single call in run()'s loop was
// mispredicted often (perf: the sample peak just after it, ~60 % of run()'s time). Every
// handler an Insn can hold is wrapped (the builders below; decode.cpp's #UD/#GP handlers).
template <Handler H> void chain(Core& c, Insn const& i)
{
    H(c, i);
    c.rip = c.r[kRegNext];
    Insn const* n = &i + 1;
    c.t_cur = n;
    if (SEVEMU_UNLIKELY(c.brk) || n == c.t_end)
        return;
    c.r[kRegNext] = (c.rip + n->len) & c.rip_mask;
    n->fn(c, *n);
}

// Handler-array builders: every handler is a template <int S, int M> (size in bytes, memory).
#define SEVEMU_H(fn) { { chain<fn<1, 0>>, chain<fn<1, 1>> }, { chain<fn<2, 0>>, chain<fn<2, 1>> }, \
    { chain<fn<4, 0>>, chain<fn<4, 1>> }, { chain<fn<8, 0>>, chain<fn<8, 1>> } }
#define SEVEMU_HA(fn, A) { { chain<fn<A, 1, 0>>, chain<fn<A, 1, 1>> }, { chain<fn<A, 2, 0>>, chain<fn<A, 2, 1>> }, \
    { chain<fn<A, 4, 0>>, chain<fn<A, 4, 1>> }, { chain<fn<A, 8, 0>>, chain<fn<A, 8, 1>> } }

inline void set_op(OpDef& d, char const* name, uint16_t flags, Imm imm, Handler const (&h)[4][2])
{
    d.name = name;
    d.flags = flags;
    d.imm = imm;
    for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 2; ++b)
            d.h[a][b] = h[a][b];
}

} // namespace sevemu::cpu
