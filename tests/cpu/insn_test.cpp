// Instruction families, bytes in -> architectural state out. Where a host instruction exists,
// the host computes the expected value (same ISA); otherwise the APM's definition does.
#include "tests/cpu/harness.h"

#include <random>

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

namespace {
void imm64(std::vector<uint8_t>& c, uint64_t v)
{
    for (int k = 0; k < 8; ++k) c.push_back(uint8_t(v >> (8 * k)));
}
void imm32(std::vector<uint8_t>& c, uint32_t v)
{
    for (int k = 0; k < 4; ++k) c.push_back(uint8_t(v >> (8 * k)));
}
// VEX3 for BMI: map (2 = 0F38, 3 = 0F3A), W, vvvv register, pp, opcode, ModRM.
std::vector<uint8_t> vex(unsigned map, bool w, unsigned vvvv, unsigned pp, uint8_t op, uint8_t modrm)
{
    return { 0xC4, uint8_t(0xE0 | map), uint8_t((w ? 0x80 : 0) | ((~vvvv & 0xF) << 3) | pp), op, modrm };
}
uint64_t run64(Machine& m, std::vector<uint8_t> code, std::initializer_list<std::pair<Gpr, uint64_t>> regs, uint64_t flags = 2)
{
    code.push_back(0xF4);
    m.start(Mode::Long64, code);
    CpuState s = m.cpu->state();
    for (auto [r, v] : regs) s.gpr[r] = v;
    s.rflags = flags;
    m.cpu->set_state(s);
    auto r = m.run();
    REQUIRE(r.reason == StopReason::Halted);
    REQUIRE(m.halted_vector() < 0);
    return m.cpu->gpr(RAX);
}
} // namespace

TEST_CASE("insn: CALL/RET, PUSH/POP, ENTER/LEAVE", "[cpu][insn]")
{
    Machine m;
    std::vector<uint8_t> c = { 0xE8, 0x05, 0, 0, 0, 0x48, 0xFF, 0xC3, 0xF4, 0x90,
        0x48, 0xC7, 0xC0, 0x2A, 0, 0, 0, 0xC3 };
    m.start(Mode::Long64, c);
    m.run();
    CHECK(m.cpu->gpr(RAX) == 42);
    CHECK(m.cpu->gpr(RBX) == 1);
    CHECK(m.cpu->gpr(RSP) == kStackTop);
    CHECK(m.cpu->rip() == kCode + 9);
    // push rax; push 0x1234 (imm32); pop rcx; pop rdx; enter 0x20, 0; leave
    run64(m, { 0x50, 0x68, 0x34, 0x12, 0, 0, 0x59, 0x5A, 0xC8, 0x20, 0, 0, 0xC9 }, { { RAX, 77 }, { RBP, 0x5555 } });
    CHECK(m.cpu->gpr(RCX) == 0x1234);
    CHECK(m.cpu->gpr(RDX) == 77);
    CHECK(m.cpu->gpr(RBP) == 0x5555);
    CHECK(m.cpu->gpr(RSP) == kStackTop);
}

TEST_CASE("insn: string instructions with REP, both directions", "[cpu][insn]")
{
    Machine m;
    std::vector<uint8_t> src(300);
    for (size_t k = 0; k < src.size(); ++k) src[k] = uint8_t(k * 7 + 1);
    m.write(kData, src);
    // rep movsb (256 bytes)
    run64(m, { 0xF3, 0xA4 }, { { RSI, kData }, { RDI, kData + 0x1000 }, { RCX, 256 } });
    CHECK(m.cpu->gpr(RCX) == 0);
    CHECK(m.cpu->gpr(RSI) == kData + 256);
    CHECK(m.cpu->gpr(RDI) == kData + 0x1000 + 256);
    for (int k = 0; k < 256; ++k) CHECK(m.get<uint8_t>(kData + 0x1000 + k) == src[k]);
    // rep stosq backwards (DF=1)
    run64(m, { 0xFD, 0xF3, 0x48, 0xAB }, { { RAX, 0x1122334455667788 }, { RDI, kData + 0x2000 + 8 * 9 }, { RCX, 10 } });
    for (int k = 0; k < 10; ++k) CHECK(m.get<uint64_t>(kData + 0x2000 + 8 * k) == 0x1122334455667788);
    CHECK(m.cpu->gpr(RDI) == kData + 0x2000 - 8);
    // repne scasb finds byte 0x40 (src[k] = 7k+1 -> k = 9)
    run64(m, { 0xF2, 0xAE }, { { RAX, 0x40 }, { RDI, kData }, { RCX, 100 } });
    CHECK(m.cpu->gpr(RDI) == kData + 10);
    CHECK(m.cpu->gpr(RCX) == 90);
    CHECK((m.cpu->state().rflags & 0x40) == 0x40);
    // repe cmpsb stops at the first difference
    m.put<uint8_t>(kData + 0x1000 + 5, 0xEE);
    run64(m, { 0xF3, 0xA6 }, { { RSI, kData }, { RDI, kData + 0x1000 }, { RCX, 50 } });
    CHECK(m.cpu->gpr(RCX) == 44);
    // lodsd with a 32-bit address size (67 prefix)
    run64(m, { 0x67, 0xAD }, { { RSI, kData } });
    CHECK(m.cpu->gpr(RAX) == (uint32_t(src[0]) | uint32_t(src[1]) << 8 | uint32_t(src[2]) << 16 | uint32_t(src[3]) << 24));
}

TEST_CASE("insn: CMPXCHG, CMPXCHG16B, XADD, XCHG, BSWAP", "[cpu][insn]")
{
    Machine m;
    m.put<uint64_t>(kData, 5);
    // lock cmpxchg [kData], rcx  (equal -> store)
    std::vector<uint8_t> c = { 0xF0, 0x48, 0x0F, 0xB1, 0x0C, 0x25 };
    imm32(c, kData);
    run64(m, c, { { RAX, 5 }, { RCX, 9 } });
    CHECK(m.get<uint64_t>(kData) == 9);
    CHECK(m.cpu->state().rflags & 0x40);
    run64(m, c, { { RAX, 5 }, { RCX, 11 } });
    CHECK(m.get<uint64_t>(kData) == 9);
    CHECK(m.cpu->gpr(RAX) == 9);
    // cmpxchg16b [kData + 16]
    m.put<uint64_t>(kData + 16, 1);
    m.put<uint64_t>(kData + 24, 2);
    std::vector<uint8_t> c16 = { 0x48, 0x0F, 0xC7, 0x0C, 0x25 };
    imm32(c16, kData + 16);
    run64(m, c16, { { RAX, 1 }, { RDX, 2 }, { RBX, 3 }, { RCX, 4 } });
    CHECK(m.get<uint64_t>(kData + 16) == 3);
    CHECK(m.get<uint64_t>(kData + 24) == 4);
    // xadd rax, rcx; bswap rcx (after xadd rcx = old rax)
    run64(m, { 0x48, 0x0F, 0xC1, 0xC8, 0x48, 0x0F, 0xC9 }, { { RAX, 0x10 }, { RCX, 0x20 } });
    CHECK(m.cpu->gpr(RAX) == 0x30);
    CHECK(m.cpu->gpr(RCX) == 0x1000000000000000ull);
    // xchg eax, ecx zero-extends; 0x90 does not touch RAX
    run64(m, { 0x87, 0xC8, 0x90 }, { { RAX, 0xFFFFFFFF00000001 }, { RCX, 0xFFFFFFFF00000002 } });
    CHECK(m.cpu->gpr(RAX) == 2);
    CHECK(m.cpu->gpr(RCX) == 1);
}

TEST_CASE("insn: SETcc and CMOVcc agree with signed/unsigned comparisons", "[cpu][insn]")
{
    Machine m;
    std::mt19937_64 rng(5);
    for (int k = 0; k < 200; ++k) {
        uint64_t a = k < 20 ? uint64_t(k % 5) - 2 : rng() >> (rng() % 64), b = k < 20 ? uint64_t(k / 5) - 2 : rng() >> (rng() % 64);
        // cmp rax, rcx; setcc [kData + cc] for all cc
        std::vector<uint8_t> c = { 0x48, 0x39, 0xC8 };
        for (int cc = 0; cc < 16; ++cc) {
            c.insert(c.end(), { 0x0F, uint8_t(0x90 + cc), 0x04, 0x25 });
            imm32(c, kData + cc);
        }
        run64(m, c, { { RAX, a }, { RCX, b } });
        uint64_t d = a - b;
        bool of = (((a ^ b) & (a ^ d)) >> 63) & 1;
        bool cf = a < b, zf = a == b, sf = int64_t(d) < 0, pf = !__builtin_parity(uint8_t(d));
        bool expect[16] = { of, !of, cf, !cf, zf, !zf, cf || zf, !(cf || zf), sf, !sf, pf, !pf,
            int64_t(a) < int64_t(b), int64_t(a) >= int64_t(b), int64_t(a) <= int64_t(b), int64_t(a) > int64_t(b) };
        for (int cc = 0; cc < 16; ++cc) {
            INFO("cc " << cc << std::hex << " a=" << a << " b=" << b);
            CHECK(m.get<uint8_t>(kData + cc) == expect[cc]);
        }
    }
    // cmovz with a false condition still zero-extends a 32-bit destination
    run64(m, { 0x39, 0xC8, 0x0F, 0x44, 0xC1 }, { { RAX, 0xFFFFFFFF00000001 }, { RCX, 2 } });
    CHECK(m.cpu->gpr(RAX) == 1);
}

TEST_CASE("insn: MOVZX/MOVSX/MOVSXD, LEA with SIB and RIP-relative, high-byte registers", "[cpu][insn]")
{
    Machine m;
    // movsx rax, cl; movzx edx, ch; movsxd rbx, ecx
    run64(m, { 0x48, 0x0F, 0xBE, 0xC1, 0x0F, 0xB6, 0xD5, 0x48, 0x63, 0xD9 }, { { RCX, 0x80F0 } });
    CHECK(m.cpu->gpr(RAX) == 0xFFFFFFFFFFFFFFF0ull);
    CHECK(m.cpu->gpr(RDX) == 0x80);
    CHECK(m.cpu->gpr(RBX) == 0x80F0);
    // lea rax, [rbx + rcx*8 + 0x10]; lea rdx, [rip + 0x100]
    run64(m, { 0x48, 0x8D, 0x44, 0xCB, 0x10, 0x48, 0x8D, 0x15, 0x00, 0x01, 0, 0 }, { { RBX, 0x1000 }, { RCX, 3 } });
    CHECK(m.cpu->gpr(RAX) == 0x1000 + 24 + 0x10);
    CHECK(m.cpu->gpr(RDX) == kCode + 12 + 0x100);
    // mov ah, 0x12; mov spl-form with REX: 40 B4 34 = mov spl, 0x34
    run64(m, { 0xB4, 0x12, 0x40, 0xB4, 0x34 }, { { RAX, 0 } });
    CHECK(m.cpu->gpr(RAX) == 0x1200);
    CHECK((m.cpu->gpr(RSP) & 0xFF) == 0x34);
}

TEST_CASE("insn: MUL/IMUL/DIV/IDIV against C++ arithmetic", "[cpu][insn]")
{
    Machine m;
    std::mt19937_64 rng(8);
    for (int k = 0; k < 100; ++k) {
        uint64_t a = rng(), b = rng() >> (rng() % 60) | 1;
        // mul rcx (rdx:rax = rax * rcx)
        run64(m, { 0x48, 0xF7, 0xE1 }, { { RAX, a }, { RCX, b } });
        unsigned __int128 p = (unsigned __int128)a * b;
        CHECK(m.cpu->gpr(RAX) == uint64_t(p));
        CHECK(m.cpu->gpr(RDX) == uint64_t(p >> 64));
        // div rcx with rdx = 0
        run64(m, { 0x31, 0xD2, 0x48, 0xF7, 0xF1 }, { { RAX, a }, { RCX, b } });
        CHECK(m.cpu->gpr(RAX) == a / b);
        CHECK(m.cpu->gpr(RDX) == a % b);
        // cqo; idiv rcx
        int64_t sa = int64_t(a), sb = int64_t(b) * (k % 2 ? -1 : 1);
        run64(m, { 0x48, 0x99, 0x48, 0xF7, 0xF9 }, { { RAX, uint64_t(sa) }, { RCX, uint64_t(sb) } });
        CHECK(int64_t(m.cpu->gpr(RAX)) == sa / sb);
        CHECK(int64_t(m.cpu->gpr(RDX)) == sa % sb);
        // idiv ecx (32-bit), cdq first
        int32_t ia = int32_t(a), ib = int32_t(b | 1) >> (k % 16);
        if (ib == 0) ib = 3;
        run64(m, { 0x99, 0xF7, 0xF9 }, { { RAX, uint32_t(ia) }, { RCX, uint32_t(ib) } });
        if (!(ia == INT32_MIN && ib == -1)) {
            CHECK(int32_t(m.cpu->gpr(RAX)) == ia / ib);
            CHECK(int32_t(m.cpu->gpr(RDX)) == ia % ib);
        }
    }
}

TEST_CASE("insn: IDIV edge cases at every width: the most negative dividend by -1 raises #DE", "[cpu][insn]")
{
    // APM vol 3 IDIV: #DE when the divisor is 0 or the signed quotient does not fit the
    // destination (AL, AX, EAX, RAX). A fault: RIP of the IDIV pushed, RAX/RDX unchanged.
    struct Form {
        unsigned bits;
        std::vector<uint8_t> code; // idiv cl / cx / ecx / rcx; the last: idiv qword [kData]
        bool mem;
    };
    std::vector<uint8_t> idiv_mem = { 0x48, 0xF7, 0x3C, 0x25 };
    imm32(idiv_mem, kData);
    Form const forms[] = { { 8, { 0xF6, 0xF9 }, false }, { 16, { 0x66, 0xF7, 0xF9 }, false }, { 32, { 0xF7, 0xF9 }, false },
        { 64, { 0x48, 0xF7, 0xF9 }, false }, { 64, idiv_mem, true } };
    uint64_t const junk = 0xA5A5A5A5A5A5A5A5ull;
    Machine m;
    for (Form const& f : forms) {
        unsigned const w = f.bits;
        __int128 const wmin = -((__int128)1 << (w - 1)), wmax = ((__int128)1 << (w - 1)) - 1;
        __int128 const dmin = w == 64 ? (__int128)((unsigned __int128)1 << 127) : -((__int128)1 << (2 * w - 1));
        struct Edge {
            __int128 dividend;
            int64_t divisor;
        };
        Edge const edges[] = {
            { dmin, -1 },          // the most negative 2w-bit dividend by -1
            { wmin, -1 },          // INT_MIN of the destination width by -1
            { wmin, 1 },           // INT_MIN / 1 fits
            { -wmin, -1 },         // 2^(w-1) / -1 = INT_MIN fits
            { wmin - 1, 1 },       // one below INT_MIN: too large
            { wmax + 1, 1 },       // one above INT_MAX: too large
            { wmin * 3 + 1, 3 },   // |quotient| just below the limit: fits
            { 12345, 0 },          // division by zero
            { dmin, 1 },           // the most negative dividend by 1: too large
        };
        for (Edge const& e : edges) {
            unsigned __int128 ud = (unsigned __int128)e.dividend;
            uint64_t const wmask = w == 64 ? ~0ull : (1ull << w) - 1;
            uint64_t lo = uint64_t(ud) & wmask, hi = uint64_t(ud >> w) & wmask;
            uint64_t rax, rdx;
            if (w == 8) {
                rax = (junk & ~0xFFFFull) | (hi << 8) | lo;
                rdx = junk;
            } else {
                rax = (junk & ~wmask) | lo;
                rdx = (junk & ~wmask) | hi;
            }
            uint64_t divisor = uint64_t(e.divisor) & wmask;
            if (f.mem) m.put<uint64_t>(kData, divisor);
            std::vector<uint8_t> code = f.code;
            code.push_back(0xF4);
            m.start(Mode::Long64, code);
            CpuState s = m.cpu->state();
            s.gpr[RAX] = rax;
            s.gpr[RDX] = rdx;
            s.gpr[RCX] = (junk & ~wmask) | divisor;
            m.cpu->set_state(s);
            m.run();
            bool fits = e.divisor != 0 && !(e.dividend == dmin && e.divisor == -1) // (INT128_MIN / -1 overflows C++ too)
                && e.dividend / e.divisor >= wmin && e.dividend / e.divisor <= wmax;
            INFO("width " << w << (f.mem ? " [mem]" : "") << " dividend hi:lo " << std::hex << hi << ":" << lo << " divisor "
                          << std::dec << e.divisor);
            if (!fits) {
                REQUIRE(m.halted_vector() == 0); // #DE
                CHECK(m.cpu->gpr(RAX) == rax);
                CHECK(m.cpu->gpr(RDX) == rdx);
                CHECK(m.get<uint64_t>(kStackTop - 40) == kCode); // the frame's RIP: the IDIV itself
                CHECK(m.get<uint64_t>(kStackTop - 32) == 0x08);  // CS
                continue;
            }
            REQUIRE(m.halted_vector() < 0);
            __int128 q = e.dividend / e.divisor, r = e.dividend % e.divisor;
            if (w == 8) {
                CHECK((m.cpu->gpr(RAX) & 0xFFFF) == ((uint64_t(r) & 0xFF) << 8 | (uint64_t(q) & 0xFF)));
                CHECK(m.cpu->gpr(RAX) >> 16 == rax >> 16);
            } else if (w == 32) { // 32-bit results zero-extend
                CHECK(m.cpu->gpr(RAX) == (uint64_t(q) & wmask));
                CHECK(m.cpu->gpr(RDX) == (uint64_t(r) & wmask));
            } else {
                CHECK(m.cpu->gpr(RAX) == ((rax & ~wmask) | (uint64_t(q) & wmask)));
                CHECK(m.cpu->gpr(RDX) == ((rdx & ~wmask) | (uint64_t(r) & wmask)));
            }
        }
    }
}

TEST_CASE("insn: bit scans and counts against the host", "[cpu][insn]")
{
    Machine m;
    std::mt19937_64 rng(9);
    for (int k = 0; k < 100; ++k) {
        uint64_t v = k == 0 ? 0 : rng() >> (rng() % 64);
        // popcnt rax, rcx; tzcnt rbx, rcx; lzcnt rdx, rcx
        run64(m, { 0xF3, 0x48, 0x0F, 0xB8, 0xC1, 0xF3, 0x48, 0x0F, 0xBC, 0xD9, 0xF3, 0x48, 0x0F, 0xBD, 0xD1 }, { { RCX, v } });
        CHECK(m.cpu->gpr(RAX) == uint64_t(__builtin_popcountll(v)));
        CHECK(m.cpu->gpr(RBX) == (v ? uint64_t(__builtin_ctzll(v)) : 64));
        CHECK(m.cpu->gpr(RDX) == (v ? uint64_t(__builtin_clzll(v)) : 64));
        if (v) {
            // bsf rax, rcx; bsr rbx, rcx
            run64(m, { 0x48, 0x0F, 0xBC, 0xC1, 0x48, 0x0F, 0xBD, 0xD9 }, { { RCX, v } });
            CHECK(m.cpu->gpr(RAX) == uint64_t(__builtin_ctzll(v)));
            CHECK(m.cpu->gpr(RBX) == uint64_t(63 - __builtin_clzll(v)));
        }
        // bt/bts/btr/btc with a register offset into memory (offset may exceed the operand)
        m.put<uint64_t>(kData, 0);
        m.put<uint64_t>(kData + 8, 0);
        unsigned bit = unsigned(v % 128);
        std::vector<uint8_t> c = { 0x48, 0x0F, 0xAB, 0x0C, 0x25 }; // bts [kData], rcx
        imm32(c, kData);
        run64(m, c, { { RCX, bit } });
        CHECK(((m.get<uint64_t>(kData + 8 * (bit / 64)) >> (bit % 64)) & 1) == 1);
    }
}

TEST_CASE("insn: BMI1/BMI2 against the host", "[cpu][insn][bmi]")
{
    if (!__builtin_cpu_supports("bmi") || !__builtin_cpu_supports("bmi2")) {
        WARN("host has no BMI1/BMI2: skipped");
        return;
    }
    Machine m;
    std::mt19937_64 rng(10);
    for (int k = 0; k < 50; ++k) {
        uint64_t x = rng(), y = rng(), z = rng() % 80 | (rng() % 80) << 8;
        uint64_t r;
        // andn rax, rbx, rcx: rax = ~rbx & rcx
        auto c = vex(2, true, RBX, 0, 0xF2, 0xC1);
        run64(m, c, { { RBX, x }, { RCX, y } });
        asm("andn %2, %1, %0" : "=r"(r) : "r"(x), "r"(y) : "cc");
        CHECK(m.cpu->gpr(RAX) == r);
        // bextr rax, rcx, rbx
        run64(m, vex(2, true, RBX, 0, 0xF7, 0xC1), { { RBX, z }, { RCX, y } });
        asm("bextr %2, %1, %0" : "=r"(r) : "r"(y), "r"(z) : "cc");
        CHECK(m.cpu->gpr(RAX) == r);
        // blsr/blsmsk/blsi rbx(vvvv), rcx
        run64(m, vex(2, true, RBX, 0, 0xF3, 0xC8 | 1), { { RCX, y } }); // /1 blsr
        asm("blsr %1, %0" : "=r"(r) : "r"(y) : "cc");
        CHECK(m.cpu->gpr(RBX) == r);
        run64(m, vex(2, true, RBX, 0, 0xF3, 0xD0 | 1), { { RCX, y } }); // /2 blsmsk
        asm("blsmsk %1, %0" : "=r"(r) : "r"(y) : "cc");
        CHECK(m.cpu->gpr(RBX) == r);
        run64(m, vex(2, true, RBX, 0, 0xF3, 0xD8 | 1), { { RCX, y } }); // /3 blsi
        asm("blsi %1, %0" : "=r"(r) : "r"(y) : "cc");
        CHECK(m.cpu->gpr(RBX) == r);
        // bzhi rax, rcx, rbx
        uint64_t n = rng() % 70;
        run64(m, vex(2, true, RBX, 0, 0xF5, 0xC1), { { RBX, n }, { RCX, y } });
        asm("bzhi %2, %1, %0" : "=r"(r) : "r"(y), "r"(n) : "cc");
        CHECK(m.cpu->gpr(RAX) == r);
        // pdep/pext rax, rbx, rcx
        run64(m, vex(2, true, RBX, 3, 0xF5, 0xC1), { { RBX, x }, { RCX, y } });
        asm("pdep %2, %1, %0" : "=r"(r) : "r"(x), "r"(y));
        CHECK(m.cpu->gpr(RAX) == r);
        run64(m, vex(2, true, RBX, 2, 0xF5, 0xC1), { { RBX, x }, { RCX, y } });
        asm("pext %2, %1, %0" : "=r"(r) : "r"(x), "r"(y));
        CHECK(m.cpu->gpr(RAX) == r);
        // shlx/sarx/shrx rax, rcx, rbx
        for (unsigned pp : { 1u, 2u, 3u }) {
            run64(m, vex(2, true, RBX, pp, 0xF7, 0xC1), { { RBX, n }, { RCX, y } });
            if (pp == 1) asm("shlx %2, %1, %0" : "=r"(r) : "r"(y), "r"(n));
            if (pp == 2) asm("sarx %2, %1, %0" : "=r"(r) : "r"(y), "r"(n));
            if (pp == 3) asm("shrx %2, %1, %0" : "=r"(r) : "r"(y), "r"(n));
            CHECK(m.cpu->gpr(RAX) == r);
        }
        // rorx rax, rcx, 13 ; mulx rax(hi), rbx(lo), rcx with rdx
        auto ro = vex(3, true, 0, 3, 0xF0, 0xC1);
        ro.push_back(13);
        run64(m, ro, { { RCX, y } });
        CHECK(m.cpu->gpr(RAX) == ((y >> 13) | (y << 51)));
        run64(m, vex(2, true, RBX, 3, 0xF6, 0xC1), { { RDX, x }, { RCX, y } });
        unsigned __int128 p = (unsigned __int128)x * y;
        CHECK(m.cpu->gpr(RAX) == uint64_t(p >> 64));
        CHECK(m.cpu->gpr(RBX) == uint64_t(p));
    }
}

TEST_CASE("insn: self-modifying code inside the running block", "[cpu][insn][smc]")
{
    Machine m;
    // mov byte [rip+1], 5 ; mov eax, 1 (its immediate is the byte written) ; hlt
    run64(m, { 0xC6, 0x05, 0x01, 0, 0, 0, 0x05, 0xB8, 0x01, 0, 0, 0 }, {});
    CHECK(m.cpu->gpr(RAX) == 5);
    CHECK(m.cpu->stats().code_invalidations >= 1);
    // The loader path: bytes rewritten behind the CPU and invalidate_code() called.
    run64(m, { 0xB8, 0x07, 0, 0, 0 }, {});
    CHECK(m.cpu->gpr(RAX) == 7);
    run64(m, { 0xB8, 0x08, 0, 0, 0 }, {});
    CHECK(m.cpu->gpr(RAX) == 8);
}

// An instruction that runs onto the next page is a cached block of its own (the bzImage
// decompressor has one in a hot loop): a store to its second page, or that page remapped and
// INVLPG'd, must still be seen.
TEST_CASE("insn: an instruction across a page boundary, cached, sees its second page change", "[cpu][insn][smc]")
{
    Machine m;
    // At 0x11FFE: mov eax, 0x44332211 (two bytes on this page, three on the next); hlt.
    m.write(0x11FFE, { 0xB8, 0x11, 0x22, 0x33, 0x44, 0xF4 });
    auto jmp_to_cross = [](std::vector<uint8_t> code) {
        code.push_back(0xE9);
        imm32(code, uint32_t(0x11FFE - (kCode + code.size() + 4)));
        return code;
    };
    m.start(Mode::Long64, jmp_to_cross({}));
    REQUIRE(m.run().reason == StopReason::Halted);
    CHECK(m.cpu->gpr(RAX) == 0x44332211);
    // Again: the crossing instruction is not decoded again (only the rewritten jump is).
    uint64_t decoded = m.cpu->stats().blocks_decoded;
    m.start(Mode::Long64, jmp_to_cross({}));
    REQUIRE(m.run().reason == StopReason::Halted);
    CHECK(m.cpu->gpr(RAX) == 0x44332211);
    CHECK(m.cpu->stats().blocks_decoded == decoded + 1);
    // The guest writes the immediate's last byte, on the second page: mov byte [0x12002], 0x55.
    m.start(Mode::Long64, jmp_to_cross({ 0xC6, 0x04, 0x25, 0x02, 0x20, 0x01, 0x00, 0x55 }));
    REQUIRE(m.run().reason == StopReason::Halted);
    CHECK(m.cpu->gpr(RAX) == 0x55332211);
    // The second page remapped to frame 0x30000 (other bytes), then invlpg [0x12000].
    m.write(0x30000, { 0x22, 0x33, 0x99, 0xF4 });
    m.start(Mode::Long64, jmp_to_cross({ 0x0F, 0x01, 0x3C, 0x25, 0x00, 0x20, 0x01, 0x00 }));
    m.put<uint64_t>(0x8000 + 8 * 0x12, 0x30000 | 0x7); // after start(), which rebuilds the tables
    REQUIRE(m.run().reason == StopReason::Halted);
    CHECK(m.cpu->gpr(RAX) == 0x99332211);
}

TEST_CASE("modes: real -> protected -> long mode, in guest code", "[cpu][modes]")
{
    Machine m;
    m.start(Mode::Real, {});
    m.build_gdt();
    m.build_paging64();
    m.build_tss64();
    m.build_stubs();
    std::vector<uint8_t> rm = { 0xFA, 0x0F, 0x01, 0x16, 0x30, 0x00, // cli; lgdt [0x30]
        0x0F, 0x20, 0xC0, 0x66, 0x83, 0xC8, 0x01, 0x0F, 0x22, 0xC0, // mov eax,cr0; or eax,1; mov cr0,eax
        0x66, 0xEA };                                               // jmp far dword 0x18:0x10040
    imm32(rm, 0x10040);
    rm.insert(rm.end(), { 0x18, 0x00 });
    m.write(0x10000, rm);
    m.put<uint16_t>(0x10030, 0x4F);
    m.put<uint32_t>(0x10032, uint32_t(kGdt));
    std::vector<uint8_t> pm = { 0x66, 0xB8, 0x10, 0x00, 0x8E, 0xD8, 0x8E, 0xD0, 0xBC, 0x00, 0x00, 0x08, 0x00,
        0x0F, 0x20, 0xE0, 0x83, 0xC8, 0x20, 0x0F, 0x22, 0xE0,       // cr4.PAE
        0xB8, 0x00, 0x10, 0x00, 0x00, 0x0F, 0x22, 0xD8,             // cr3 = 0x1000
        0xB9, 0x80, 0x00, 0x00, 0xC0, 0x0F, 0x32, 0x0D, 0x00, 0x01, 0x00, 0x00, 0x0F, 0x30, // EFER.LME
        0x0F, 0x20, 0xC0, 0x0D, 0x00, 0x00, 0x00, 0x80, 0x0F, 0x22, 0xC0, // CR0.PG
        0xEA };
    imm32(pm, 0x10080);
    pm.insert(pm.end(), { 0x08, 0x00 });
    m.write(0x10040, pm);
    std::vector<uint8_t> lm = { 0x48, 0xB8 };
    imm64(lm, 0x1122334455667788);
    lm.insert(lm.end(), { 0x48, 0xC1, 0xC0, 0x08, 0xF4 });
    m.write(0x10080, lm);
    auto r = m.run();
    CHECK(r.reason == StopReason::Halted);
    CHECK(m.halted_vector() < 0);
    CHECK(m.cpu->gpr(RAX) == 0x2233445566778811ull);
    auto s = m.cpu->state();
    CHECK((s.efer & 0x400) == 0x400);
    CHECK(s.seg[CS].selector == 0x08);
    CHECK(s.gpr[RSP] == 0x80000);
}

TEST_CASE("modes: SYSCALL/SYSRET and SWAPGS round trip", "[cpu][modes]")
{
    Machine m;
    // kernel: mov rcx, user; mov r11, 2; sysretq
    std::vector<uint8_t> k = { 0x48, 0xC7, 0xC1 };
    imm32(k, kCode + 0x100);
    k.insert(k.end(), { 0x49, 0xC7, 0xC3, 0x02, 0, 0, 0, 0x48, 0x0F, 0x07 });
    m.start(Mode::Long64, k);
    m.write(kCode + 0x100, { 0x0F, 0x05 });             // user: syscall
    m.write(kCode + 0x200, { 0x0F, 0x01, 0xF8, 0xF4 }); // kernel entry: swapgs; hlt
    CpuState s = m.cpu->state();
    s.msr.star = (0x38ull << 48) | (0x08ull << 32);
    s.msr.lstar = kCode + 0x200;
    s.msr.sfmask = 0x200;
    s.msr.kernel_gs_base = 0xABCD;
    m.cpu->set_state(s);
    auto r = m.run();
    CHECK(r.reason == StopReason::Halted);
    CpuState o = m.cpu->state();
    CHECK(o.gpr[RCX] == kCode + 0x102);
    CHECK(o.seg[CS].selector == 0x08);
    CHECK(o.seg[SS].selector == 0x10);
    CHECK(o.seg[GS].base == 0xABCD);
    CHECK(m.cpu->rip() == kCode + 0x204);
}

TEST_CASE("io: IN/OUT, the stop request, and IOPL checks", "[cpu][io]")
{
    Machine m;
    // in eax, 0x42; out 0x80, eax; mov dx, 0xF4; out dx, al (stop request); hlt
    m.start(Mode::Long64, { 0xE5, 0x42, 0xE7, 0x80, 0x66, 0xBA, 0xF4, 0x00, 0xEE, 0xF4 });
    auto r = m.run();
    CHECK(r.reason == StopReason::StopRequested);
    CHECK(r.instructions == 4);
    CHECK(m.cpu->gpr(RAX) == 0x12345678);
    REQUIRE(m.io.outs.size() == 2);
    CHECK(m.io.outs[0].second == 0x12345678);
    CHECK(m.run().reason == StopReason::Halted);
}
