// sevemu — instruction decoder: prefixes, REX/VEX, ModRM/SIB, displacement and immediate,
// driven by the one opcode table (ops.h). APM vol 3 §1 (instruction encoding) and Appendix A
// (opcode maps). The result is an Insn whose handler is already chosen: execution never
// decodes again.
#include "cpu/ops.h"

#include <cstdio>
#include <mutex>

namespace sevemu::cpu {

namespace {

template <int S, int M>
void op_ud(Core& c, Insn const&) { c.raise(UD); }
template <int S, int M>
void op_gp_len(Core& c, Insn const&) { c.raise(GP, 0); } // longer than 15 bytes (APM vol 3 §1.1)

OpTables* build()
{
    auto* t = new OpTables;
    register_int_ops(*t);
    register_svm_ops(*t);
    register_segment_ops(*t);
    register_control_ops(*t);
    register_far_ops(*t);
    register_event_ops(*t);
    register_io_ops(*t);
    register_sse_ops(*t);
    register_sse4_ops(*t);
    register_x87_ops(*t);
    return t;
}

uint8_t byte_reg_off(unsigned r, bool rex)
{
    if (!rex && r >= 4 && r < 8)
        return uint8_t((r - 4) * 8 + 1); // AH, CH, DH, BH
    return uint8_t(r * 8);
}

// LOCK is #UD except on these read-modify-write instructions with a memory destination
// (APM vol 3 §1.2.5).
bool lockable(unsigned map, uint8_t op, unsigned reg)
{
    if (map == kMapPrimary) {
        if (op < 0x38 && (op & 7) <= 1) return true;
        if (op >= 0x80 && op <= 0x83) return reg != 7;
        if (op == 0x86 || op == 0x87) return true;
        if (op == 0xF6 || op == 0xF7) return reg == 2 || reg == 3;
        if (op == 0xFE || op == 0xFF) return reg <= 1;
    } else if (map == kMap0F) {
        switch (op) {
        case 0xAB: case 0xB3: case 0xBB: case 0xB0: case 0xB1: case 0xC0: case 0xC1: return true;
        case 0xBA: return reg >= 5;
        case 0xC7: return reg == 1;
        default: break;
        }
    }
    return false;
}

unsigned size_index(unsigned s) { return s == 1 ? 0 : s == 2 ? 1 : s == 4 ? 2 : 3; }

} // namespace

OpTables const& op_tables()
{
    static OpTables const* t = build();
    return *t;
}

unsigned decode_one(uint8_t const* b, size_t avail, uint8_t mode, Insn& o)
{
    OpTables const& T = op_tables();
    size_t pos = 0;
    bool short_read = false;
    // A byte at index 15 or beyond is never needed: an instruction that reaches it is longer
    // than 15 bytes and #GP whatever the byte is (APM vol 3 §1.1), so it is not fetched (it may
    // lie on an unmapped page) and does not count as a short read. A short read (a byte below
    // 15 missing) always means "give me more bytes": the missing bytes could change the length.
    auto next = [&]() -> uint8_t {
        if (pos >= 15) {
            ++pos;
            return 0;
        }
        if (pos >= avail) {
            short_read = true;
            ++pos;
            return 0;
        }
        return b[pos++];
    };
    auto next_n = [&](int n) -> uint64_t {
        uint64_t v = 0;
        for (int k = 0; k < n; ++k)
            v |= uint64_t(next()) << (8 * k);
        return v;
    };

    o = Insn {};
    bool opsize = false, adsize = false;
    uint8_t rep = 0, lock = 0, rex = 0;
    int seg = -1;
    uint8_t op;
    for (;;) {
        op = next();
        if (short_read)
            return 0;
        if (pos > 15) {
            o.fn = chain<op_gp_len<1, 0>>;
            o.len = 15;
            return 15;
        }
        switch (op) {
        case 0x66: opsize = true; rex = 0; continue;
        case 0x67: adsize = true; rex = 0; continue;
        case 0xF2: rep = kPfxRepne; rex = 0; continue;
        case 0xF3: rep = kPfxRep; rex = 0; continue;
        case 0xF0: lock = kPfxLock; rex = 0; continue;
        case 0x26: seg = ES; rex = 0; continue;
        case 0x2E: seg = CS; rex = 0; continue;
        case 0x36: seg = SS; rex = 0; continue;
        case 0x3E: seg = DS; rex = 0; continue;
        case 0x64: seg = FS; rex = 0; continue;
        case 0x65: seg = GS; rex = 0; continue;
        default: break;
        }
        if (mode == 2 && (op & 0xF0) == 0x40) {
            rex = op; // only effective when it immediately precedes the opcode
            continue;
        }
        break;
    }

    unsigned map = kMapPrimary;
    bool vex = false;
    uint8_t vex_pp = 0, vex_vvvv = 0;
    bool vex_w = false;
    bool rex_r = rex & 4, rex_x = rex & 2, rex_b = rex & 1, rex_w = rex & 8;
    if (op == 0x0F) {
        op = next();
        map = kMap0F;
        if (op == 0x38) {
            op = next();
            map = kMap0F38;
        } else if (op == 0x3A) {
            op = next();
            map = kMap0F3A;
        }
    } else if ((op == 0xC4 || op == 0xC5) && (mode == 2 || (pos < avail && pos < 15 && (b[pos] & 0xC0) == 0xC0))) {
        // VEX (APM vol 3 §1.9). REX/66/F2/F3/F0 before VEX is #UD. Outside 64-bit mode the
        // next byte decides VEX or LES/LDS; at index 15 it is never looked at (too long anyway).
        vex = true;
        uint8_t v1 = next();
        unsigned mmmmm = 1;
        if (op == 0xC4) {
            uint8_t v2 = next();
            rex_r = !(v1 & 0x80);
            rex_x = !(v1 & 0x40);
            rex_b = !(v1 & 0x20);
            mmmmm = v1 & 0x1F;
            vex_w = v2 & 0x80;
            vex_vvvv = (~v2 >> 3) & 0xF;
            vex_pp = v2 & 3;
            if (v2 & 4) // VEX.L=1: no 256-bit forms implemented
                mmmmm = 0;
        } else {
            rex_r = !(v1 & 0x80);
            vex_vvvv = (~v1 >> 3) & 0xF;
            vex_pp = v1 & 3;
            if (v1 & 4)
                mmmmm = 0;
        }
        if (mode != 2) {
            rex_x = rex_b = false; // VEX.W is ignored outside 64-bit mode (osize below)
            vex_vvvv &= 7;
        }
        op = next();
        if (mmmmm == 2)
            map = kMapVex0F38 + vex_pp;
        else if (mmmmm == 3 && vex_pp == 3)
            map = kMapVex0F3A;
        else
            map = kNumMaps; // unimplemented VEX map
        if (rex || opsize || rep || lock)
            map = kNumMaps;
    }
    if (short_read)
        return 0;

    static OpDef const kUndefined {};
    OpDef const* d = map < kNumMaps ? &T.map[map][op] : &kUndefined;
    bool rep_consumed = false, opsize_consumed = false;
    if (map == kMap0F) {
        if (rep == kPfxRep && T.map[kMapF30F][op].name) {
            d = &T.map[kMapF30F][op];
            rep_consumed = true;
        } else if (rep == kPfxRepne && T.map[kMapF20F][op].name) {
            d = &T.map[kMapF20F][op];
            rep_consumed = true;
        } else if (opsize && T.map[kMap660F][op].name) {
            d = &T.map[kMap660F][op];
            opsize_consumed = true;
        }
    } else if (map == kMap0F38 || map == kMap0F3A) {
        // Three-byte maps (APM vol 3 Appendix A, Tables ): F2 selects its own table and
        // beats 66, which then stays an operand-size prefix (66 F2 0F 38 F1 is CRC32 r32, r/m16);
        // F3 defines nothing here (#UD; MOVBE is #UD with F3); 66 selects the SSSE3/SSE4 table
        // and otherwise stays an operand-size prefix (66 0F 38 F0 is MOVBE r16, m16).
        if (rep == kPfxRepne) {
            d = map == kMap0F38 ? &T.map[kMapF20F38][op] : &kUndefined;
            rep_consumed = true;
        } else if (rep == kPfxRep) {
            d = &kUndefined;
        } else if (opsize && T.map[map == kMap0F38 ? kMap660F38 : kMap660F3A][op].name) {
            d = &T.map[map == kMap0F38 ? kMap660F38 : kMap660F3A][op];
            opsize_consumed = true;
        }
    }
    uint16_t flags = d->flags;
    Imm imm = d->imm;
    bool invalid = !d->name || ((flags & kInv64) && mode == 2);

    uint8_t modrm = 0;
    bool has_modrm = (flags & kModrm) || d->group >= 0;
    if (has_modrm)
        modrm = next();
    unsigned mod = modrm >> 6;
    // MOV CRn / MOV DRn (0F 20-23) ignore ModRM.mod: always register to register, never a
    // memory operand or a displacement (APM vol 3 "MOV CRn", "MOV DRn").
    if (map == kMap0F && (op & 0xFC) == 0x20)
        mod = 3;
    if (!invalid && d->group >= 0) {
        OpDef const& g = T.grp[d->group][(modrm >> 3) & 7];
        if (map == kMap0F && op == 0x01 && mod == 3) {
            d = &T.map[kMap0F01Reg][modrm];
            flags = uint16_t(d->flags | kModrm);
        } else {
            d = &g;
            flags = uint16_t(flags | g.flags);
            if (g.imm != Imm::None)
                imm = g.imm;
        }
        invalid = !d->name || ((flags & kInv64) && mode == 2);
    }
    if ((flags & kMemOnly) && mod == 3)
        invalid = true;
    if ((flags & kRegOnly) && mod != 3)
        invalid = true;
    if (lock && (mod == 3 || !has_modrm || !lockable(map, op, (modrm >> 3) & 7)))
        invalid = true;

    // Operand and address size (APM vol 1 §2.2.3, vol 3 §1.2.2-1.2.3).
    bool osz16 = opsize && !opsize_consumed;
    unsigned osize;
    if (flags & kByte)
        osize = 1;
    else if (flags & kFixed16)
        osize = 2;
    else if (vex)
        osize = (vex_w && mode == 2) ? 8 : 4;
    else if (mode == 2) {
        if ((flags & kForce64) || rex_w)
            osize = 8;
        else if (flags & kDef64)
            osize = osz16 ? 2 : 8;
        else
            osize = osz16 ? 2 : 4;
    } else if (flags & kForce64) {
        osize = 4;
    } else {
        osize = ((mode == 1) != osz16) ? 4 : 2;
    }
    unsigned asize = mode == 2 ? (adsize ? 1 : 2) : ((mode == 1) != adsize ? 1 : 0);
    o.osize = uint8_t(osize);
    o.asize = uint8_t(asize);
    o.pfx = uint8_t((rep_consumed ? 0 : rep) | lock | (osz16 ? kPfxOpsize : 0) | (rex ? kPfxRex : 0) | (rex_w ? kPfxRexW : 0) | ((flags & kEnd) ? kPfxEnd : 0));
    o.modrm = modrm;
    o.base = o.index = kRegZero;
    o.seg = DS;
    bool byte_regs = osize == 1;
    unsigned regno = ((modrm >> 3) & 7) | (rex_r ? 8 : 0);
    if (!has_modrm)
        regno = (op & 7) | (rex_b ? 8 : 0); // opcode-embedded register
    o.reg = byte_regs ? byte_reg_off(regno, rex) : uint8_t(regno * 8);
    o.vreg = uint8_t(vex_vvvv * 8);

    if (has_modrm) {
        if (mod == 3) {
            unsigned rmno = (modrm & 7) | (rex_b ? 8 : 0);
            o.rm = (byte_regs || (flags & kSrcByte)) ? byte_reg_off(rmno, rex) : uint8_t(rmno * 8);
        } else {
            o.mem = 1;
            unsigned rm = modrm & 7;
            bool ss_default = false;
            if (asize == 0) {
                static constexpr uint8_t kBase[8] = { RBX, RBX, RBP, RBP, RSI, RDI, RBP, RBX };
                static constexpr uint8_t kIndex[8] = { RSI, RDI, RSI, RDI, kRegZero, kRegZero, kRegZero, kRegZero };
                if (mod == 0 && rm == 6) {
                    o.disp = int32_t(uint16_t(next_n(2)));
                } else {
                    o.base = kBase[rm];
                    o.index = kIndex[rm];
                    ss_default = rm == 2 || rm == 3 || rm == 6;
                    if (mod == 1)
                        o.disp = int8_t(next());
                    else if (mod == 2)
                        o.disp = int32_t(uint16_t(next_n(2)));
                }
            } else {
                if (rm == 4) {
                    uint8_t sib = next();
                    unsigned idx = ((sib >> 3) & 7) | (rex_x ? 8 : 0);
                    unsigned bs = sib & 7;
                    o.scale = sib >> 6;
                    o.index = idx == 4 ? uint8_t(kRegZero) : uint8_t(idx);
                    if (bs == 5 && mod == 0) {
                        o.disp = int32_t(next_n(4));
                    } else {
                        o.base = uint8_t(bs | (rex_b ? 8 : 0));
                        ss_default = bs == 4 || bs == 5;
                    }
                } else if (rm == 5 && mod == 0) {
                    o.disp = int32_t(next_n(4));
                    if (mode == 2)
                        o.base = kRegNext; // RIP-relative (APM vol 3 §1.7)
                } else {
                    o.base = uint8_t(rm | (rex_b ? 8 : 0));
                    ss_default = rm == 5;
                }
                if (mod == 1)
                    o.disp = int8_t(next());
                else if (mod == 2)
                    o.disp = int32_t(next_n(4));
            }
            o.seg = ss_default ? SS : DS;
        }
    }
    if (seg >= 0)
        o.seg = uint8_t(seg);

    switch (imm) {
    case Imm::None: break;
    case Imm::B: o.imm = next(); break;
    case Imm::SB: o.imm = uint64_t(int64_t(int8_t(next()))); break;
    case Imm::W: o.imm = next_n(2); break;
    case Imm::Z:
        o.imm = osize == 2 ? next_n(2) : uint64_t(int64_t(int32_t(next_n(4))));
        break;
    case Imm::V:
        o.imm = osize == 8 ? next_n(8) : osize == 2 ? next_n(2) : next_n(4);
        break;
    case Imm::Jb: o.imm = uint64_t(int64_t(int8_t(next()))); break;
    case Imm::Jz:
        o.imm = osize == 2 ? uint64_t(int64_t(int16_t(next_n(2)))) : uint64_t(int64_t(int32_t(next_n(4))));
        break;
    case Imm::Far:
        o.imm = osize == 2 ? next_n(2) : next_n(4);
        o.disp = int32_t(next_n(2));
        break;
    case Imm::Moffs:
        o.imm = next_n(asize == 0 ? 2 : asize == 1 ? 4 : 8);
        break;
    case Imm::WB:
        o.imm = next_n(2);
        o.imm2 = next();
        break;
    }
    if (short_read)
        return 0;
    if (pos > 15) {
        o.fn = chain<op_gp_len<1, 0>>;
        o.len = 15;
        return 15;
    }
    o.len = uint8_t(pos);
    o.op = uint16_t(d - &T.map[0][0]);
    if (d >= &T.grp[0][0])
        o.op = uint16_t(kNumMaps * 256 + (d - &T.grp[0][0]));
    if (invalid) {
        o.fn = chain<op_ud<1, 0>>;
        o.op = 0xFFFF;
        o.pfx |= kPfxEnd;
        return unsigned(pos);
    }
    Handler h = d->h[size_index(osize)][o.mem];
    o.fn = h ? h : chain<op_ud<1, 0>>;
    return unsigned(pos);
}

std::string disassemble_insn(Insn const& i, uint64_t rip)
{
    static char const* const kReg64[] = { "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                          "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "", "rip" };
    static char const* const kSeg[] = { "es", "cs", "ss", "ds", "fs", "gs" };
    OpTables const& T = op_tables();
    char const* name = "(bad)";
    if (i.op != 0xFFFF) {
        OpDef const* d = i.op < kNumMaps * 256 ? &T.map[0][0] + i.op : &T.grp[0][0] + (i.op - kNumMaps * 256);
        if (d->name)
            name = d->name;
    }
    std::string s = name;
    char buf[96];
    if (i.mem) {
        std::snprintf(buf, sizeof buf, " %s:[%s%s%s*%d%+d]", kSeg[i.seg], kReg64[i.base], i.index != kRegZero ? "+" : "",
            i.index != kRegZero ? kReg64[i.index] : "", 1 << i.scale, i.disp);
        s += buf;
    } else if (i.modrm != 0 || i.rm != 0) {
        std::snprintf(buf, sizeof buf, " r%u", i.rm / 8);
        s += buf;
    }
    if (i.imm) {
        std::snprintf(buf, sizeof buf, " imm=0x%llx", (unsigned long long)i.imm);
        s += buf;
    }
    std::snprintf(buf, sizeof buf, "  (o%u a%u len %u @%llx)", i.osize * 8, 16u << i.asize, i.len, (unsigned long long)rip);
    s += buf;
    return s;
}

} // namespace sevemu::cpu
