// Fuzz harness `decoder`: the x86 decoder the interpreter and the trace disassembly share
// (cpu/core.h decode_one, disassemble_insn; one opcode table, STYLE.md rule 10), on arbitrary
// bytes in 16-, 32- and 64-bit mode.
//
// Input: byte 0 chooses the mode (% 3); the rest is code, decoded at every offset.
// Properties checked for each instruction:
//   - the length is 1..15 and within the bytes given, or 0 ("need more bytes") only when fewer
//     than 15 bytes were given, and then giving 15 bytes decodes it;
//   - the decode depends only on the instruction's own bytes: decoding exactly `len` bytes, or
//     with different bytes after it, gives the same instruction;
//   - the length agrees with Zydis (an independent decoder, Debian libzydis-dev) whenever both
//     decode the bytes as a valid instruction — the length decides where the next instruction
//     starts, so a wrong one desynchronises everything after it;
//   - the disassembly is one non-empty line naming that length.
#include "fuzz_check.h"

#include "cpu/core.h"

#include <Zydis/Zydis.h>

#include <array>
#include <cstring>
#include <string>

using namespace sevemu;
using namespace sevemu::cpu;

namespace {

bool same(Insn const& a, Insn const& b)
{
    return a.fn == b.fn && a.imm == b.imm && a.disp == b.disp && a.op == b.op && a.len == b.len && a.reg == b.reg
        && a.rm == b.rm && a.base == b.base && a.index == b.index && a.scale == b.scale && a.seg == b.seg
        && a.asize == b.asize && a.osize == b.osize && a.pfx == b.pfx && a.modrm == b.modrm && a.vreg == b.vreg
        && a.mem == b.mem && a.imm2 == b.imm2;
}

std::string hex_of(uint8_t const* p, size_t n)
{
    std::string s;
    char b[4];
    for (size_t i = 0; i < n; ++i) {
        std::snprintf(b, sizeof b, "%02x ", p[i]);
        s += b;
    }
    return s;
}

ZydisDecoder const& zydis(uint8_t mode)
{
    static std::array<ZydisDecoder, 3> d = [] {
        std::array<ZydisDecoder, 3> d {};
        ZydisDecoderInit(&d[0], ZYDIS_MACHINE_MODE_LEGACY_16, ZYDIS_STACK_WIDTH_16);
        ZydisDecoderInit(&d[1], ZYDIS_MACHINE_MODE_LEGACY_32, ZYDIS_STACK_WIDTH_32);
        ZydisDecoderInit(&d[2], ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
        // sevemu models AMD: in 64-bit mode a 66 prefix makes near branches rel16 (APM vol 3
        // "Jcc", "JMP", "CALL"); Intel ignores it. Zydis decodes Intel's way unless told.
        for (auto& x : d)
            ZydisDecoderEnableMode(&x, ZYDIS_DECODER_MODE_AMD_BRANCHES, ZYAN_TRUE);
        return d;
    }();
    return d[mode];
}

void check_at(uint8_t const* code, size_t avail, uint8_t mode)
{
    Insn insn;
    unsigned len = decode_one(code, avail, mode, insn);
    std::string bytes = hex_of(code, std::min<size_t>(avail, 15));
    if (len == 0) {
        FUZZ_CHECK(avail < 15, "needs more than 15 bytes: %s (mode %u)", bytes.c_str(), mode);
        std::array<uint8_t, 16> padded {};
        std::memcpy(padded.data(), code, avail);
        Insn full;
        FUZZ_CHECK(decode_one(padded.data(), padded.size(), mode, full) != 0, "15 bytes do not decode");
        return;
    }
    FUZZ_CHECK(len >= 1 && len <= 15 && len <= avail, "length %u of %s (mode %u, %zu bytes)", len, bytes.c_str(), mode, avail);
    FUZZ_CHECK(insn.len == len, "Insn::len %u, returned %u", insn.len, len);

    Insn exact;
    FUZZ_CHECK(decode_one(code, len, mode, exact) == len && same(exact, insn),
        "decoding exactly %u bytes of %s differs (mode %u)", len, bytes.c_str(), mode);
    std::array<uint8_t, 32> other {};
    std::memcpy(other.data(), code, len);
    for (size_t i = len; i < other.size(); ++i)
        other[i] = uint8_t(~(i < avail ? code[i] : 0));
    Insn changed;
    FUZZ_CHECK(decode_one(other.data(), other.size(), mode, changed) == len && same(changed, insn),
        "the bytes after %s change its decode (mode %u)", bytes.c_str(), mode);

    std::string text = disassemble_insn(insn, 0x1000);
    FUZZ_CHECK(!text.empty() && text.find('\n') == std::string::npos, "disassembly");
    FUZZ_CHECK(text.find("len " + std::to_string(len) + " ") != std::string::npos, "disassembly does not say len %u: %s",
        len, text.c_str());

    if (insn.op == 0xFFFF)
        return; // sevemu: #UD
    ZydisDecodedInstruction z;
    if (!ZYAN_SUCCESS(ZydisDecoderDecodeInstruction(&zydis(mode), nullptr, code, avail, &z)))
        return;
    FUZZ_CHECK(z.length == len, "length %u, Zydis %u: %s (mode %u, %s)", len, unsigned(z.length), bytes.c_str(), mode,
        text.c_str());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t mode = data[0] % 3;
    for (size_t at = 1; at < size && at < 1 + 64; ++at)
        check_at(data + at, size - at, mode);
    return 0;
}
