// sevemu — port I/O: the IOPL check and the I/O permission bitmap in the TSS (APM vol 2), the
// SVM I/O intercept (§15.10), and IN/OUT/INS/OUTS (APM vol 3).
#include "cpu/exec_sys.h"

namespace sevemu::cpu {

using namespace rflags;
using namespace sys;

// ---------------------------------------------------------------- I/O permission

bool Core::io_allowed(uint16_t port, unsigned size)
{
    if (!(cr0 & cr0::PE)) return true;
    if (!(flags & VM) && cpl <= ((flags >> 12) & 3)) return true;
    // I/O permission bitmap in the TSS (APM vol 2 §13.3.2).
    if ((tr.attr & 0xD) != 0x9 || tr.limit < 0x67) return false;
    uint16_t base = rd_sys<uint16_t>(tr.base + 0x66);
    uint64_t at = uint64_t(base) + port / 8;
    if (at + 1 > tr.limit) return false;
    uint16_t bits = rd_sys<uint16_t>(tr.base + at);
    return ((bits >> (port & 7)) & ((1u << size) - 1)) == 0;
}

// ---------------------------------------------------------------- instruction handlers

namespace {

// ---- port I/O (A: 0 imm port, 1 DX port)
// In guest mode: IOIO_PROT and the IOPM (APM vol 2 §15.10), after the protection checks;
// EXITINFO1 describes the access, EXITINFO2 is the next RIP.
// True when the #VMEXIT was taken (Core::intercept_return): the handler returns at once.
inline bool io_intercept(Core& c, Insn const& i, uint16_t port, unsigned n, bool in, bool str)
{
    if (SEVEMU_LIKELY(!c.guest) || !c.guest->io_intercepted(c.mc, port, n)) return false;
    svm::IoioInfo io { port, n, in, str, bool(i.pfx & (kPfxRep | kPfxRepne)) && str,
        i.asize == 0 ? 16u : i.asize == 1 ? 32u : 64u, uint8_t(str && !in ? unsigned(i.seg) : unsigned(DS)) };
    c.intercept_return(svm::Intercept::IOIO_PROT, svm::ioio_exit_info_1(io), c.r[kRegNext]);
    return true;
}
template <int A, int S, int M> void in_op(Core& c, Insn const& i)
{
    uint16_t port = A ? uint16_t(c.r[RDX]) : uint16_t(i.imm);
    constexpr unsigned n = S > 4 ? 4 : S;
    if (!c.io_allowed(port, n)) c.raise(GP, 0);
    if (io_intercept(c, i, port, n, true, false)) return;
    c.setr<(S > 4 ? 4 : S)>(0, c.dev().port_in(port, n));
    end(c);
}
template <int A, int S, int M> void out_op(Core& c, Insn const& i)
{
    uint16_t port = A ? uint16_t(c.r[RDX]) : uint16_t(i.imm);
    constexpr unsigned n = S > 4 ? 4 : S;
    if (!c.io_allowed(port, n)) c.raise(GP, 0);
    if (io_intercept(c, i, port, n, false, false)) return;
    c.dev().port_out(port, n, uint32_t(c.r[RAX]) & (n == 4 ? 0xFFFFFFFFu : (1u << (8 * n)) - 1));
    end(c);
}
template <int A, int S, int M> void ins_outs(Core& c, Insn const& i)
{
    constexpr unsigned n = S > 4 ? 4 : S;
    uint16_t port = uint16_t(c.r[RDX]);
    if (!c.io_allowed(port, n)) c.raise(GP, 0);
    if (io_intercept(c, i, port, n, A == 0, true)) return;
    uint64_t am = kAsizeMask[i.asize];
    bool rep = i.pfx & (kPfxRep | kPfxRepne);
    int64_t d = (c.flags & DF) ? -int64_t(n) : int64_t(n);
    uint64_t cnt = rep ? (c.r[RCX] & am) : 1;
    if (cnt > 4096) cnt = 4096;
    auto adv = [&](unsigned reg, int64_t delta) {
        uint64_t v = (c.r[reg] + uint64_t(delta)) & am;
        c.r[reg] = i.asize == 1 ? v : (c.r[reg] & ~am) | v;
    };
    for (uint64_t k = 0; k < cnt; ++k) {
        if (A == 0) { // INS: ES:rDI
            uint64_t a = c.seg_lin(ES, c.r[RDI] & am, n, true);
            uint32_t v = c.dev().port_in(port, n);
            if (n == 1) c.wr<uint8_t>(a, uint8_t(v)); else if (n == 2) c.wr<uint16_t>(a, uint16_t(v)); else c.wr<uint32_t>(a, v);
            adv(RDI, d);
        } else {
            uint64_t a = c.seg_lin(i.seg, c.r[RSI] & am, n, false);
            uint32_t v = n == 1 ? c.rd<uint8_t>(a) : n == 2 ? c.rd<uint16_t>(a) : c.rd<uint32_t>(a);
            c.dev().port_out(port, n, v);
            adv(RSI, d);
        }
        if (rep) adv(RCX, -1);
    }
    if (rep && (c.r[RCX] & am)) c.r[kRegNext] = c.rip;
    end(c);
}

} // namespace

void register_io_ops(OpTables& t)
{
    auto& p = t.map[kMapPrimary];
    set_op(p[0xE4], "in", kByte, Imm::B, SEVEMU_HA(in_op, 0));
    set_op(p[0xE5], "in", 0, Imm::B, SEVEMU_HA(in_op, 0));
    set_op(p[0xE6], "out", kByte, Imm::B, SEVEMU_HA(out_op, 0));
    set_op(p[0xE7], "out", 0, Imm::B, SEVEMU_HA(out_op, 0));
    set_op(p[0xEC], "in", kByte, Imm::None, SEVEMU_HA(in_op, 1));
    set_op(p[0xED], "in", 0, Imm::None, SEVEMU_HA(in_op, 1));
    set_op(p[0xEE], "out", kByte, Imm::None, SEVEMU_HA(out_op, 1));
    set_op(p[0xEF], "out", 0, Imm::None, SEVEMU_HA(out_op, 1));
    set_op(p[0x6C], "ins", kByte, Imm::None, SEVEMU_HA(ins_outs, 0));
    set_op(p[0x6D], "ins", 0, Imm::None, SEVEMU_HA(ins_outs, 0));
    set_op(p[0x6E], "outs", kByte, Imm::None, SEVEMU_HA(ins_outs, 1));
    set_op(p[0x6F], "outs", 0, Imm::None, SEVEMU_HA(ins_outs, 1));
}

} // namespace sevemu::cpu
