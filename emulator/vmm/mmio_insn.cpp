// MMIO instruction decoding for #NPF emulation (see mmio_insn.h), with Zydis 4.
#include "emulator/vmm/mmio_insn.h"

#include <Zydis/Zydis.h>
#include <fmt/format.h>

namespace sevemu::vmm {

namespace {

uint64_t mask_of(unsigned bytes) { return bytes >= 8 ? ~0ull : (1ull << (8 * bytes)) - 1; }

} // namespace

Result<MmioInsn, std::string> decode_mmio_insn(std::span<uint8_t const> bytes, CodeSize mode)
{
    ZydisMachineMode mm = mode == CodeSize::Bits64 ? ZYDIS_MACHINE_MODE_LONG_64
        : mode == CodeSize::Bits32                ? ZYDIS_MACHINE_MODE_LEGACY_32
                                                  : ZYDIS_MACHINE_MODE_LEGACY_16;
    ZydisStackWidth sw = mode == CodeSize::Bits64 ? ZYDIS_STACK_WIDTH_64
        : mode == CodeSize::Bits32                ? ZYDIS_STACK_WIDTH_32
                                                  : ZYDIS_STACK_WIDTH_16;
    ZydisDecoder decoder;
    if (!ZYAN_SUCCESS(ZydisDecoderInit(&decoder, mm, sw)))
        return make_unexpected(std::string("the instruction decoder could not be initialised"));
    ZydisDecodedInstruction insn;
    ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
    if (bytes.empty() || !ZYAN_SUCCESS(ZydisDecoderDecodeFull(&decoder, bytes.data(), bytes.size(), &insn, ops))) {
        std::string hex;
        for (uint8_t b : bytes)
            hex += fmt::format(" {:02x}", b);
        return make_unexpected("undecodable instruction bytes:" + hex);
    }

    MmioInsn m;
    m.length = insn.length;
    switch (insn.mnemonic) {
    case ZYDIS_MNEMONIC_MOV:
    case ZYDIS_MNEMONIC_MOVNTI: m.kind = MmioInsn::Kind::Mov; break;
    case ZYDIS_MNEMONIC_MOVZX: m.kind = MmioInsn::Kind::MovZx; break;
    case ZYDIS_MNEMONIC_MOVSX: m.kind = MmioInsn::Kind::MovSx; break;
    default:
        return make_unexpected(fmt::format("instruction {} at an MMIO address is not emulated (MOV, MOVZX, MOVSX, MOVNTI are)",
            ZydisMnemonicGetString(insn.mnemonic)));
    }
    if (insn.operand_count_visible != 2)
        return make_unexpected(std::string("unexpected operands for an MMIO access"));
    ZydisDecodedOperand const& dst = ops[0];
    ZydisDecodedOperand const& src = ops[1];
    ZydisDecodedOperand const* mem = nullptr;
    ZydisDecodedOperand const* other = nullptr;
    if (dst.type == ZYDIS_OPERAND_TYPE_MEMORY) {
        m.write = true;
        mem = &dst;
        other = &src;
    } else if (src.type == ZYDIS_OPERAND_TYPE_MEMORY) {
        mem = &src;
        other = &dst;
    } else {
        return make_unexpected(std::string("the instruction does not access memory"));
    }
    if (mem->mem.segment == ZYDIS_REGISTER_NONE && mem->mem.type != ZYDIS_MEMOP_TYPE_MEM)
        return make_unexpected(std::string("not a memory access"));
    m.size = mem->size / 8;
    if (m.size != 1 && m.size != 2 && m.size != 4 && m.size != 8)
        return make_unexpected(fmt::format("{}-bit MMIO access is not emulated", mem->size));
    if (m.write && m.kind != MmioInsn::Kind::Mov)
        return make_unexpected(std::string("unexpected MMIO write form"));
    if (other->type == ZYDIS_OPERAND_TYPE_IMMEDIATE) {
        // Zydis gives the immediate sign-extended as the instruction defines it (C7 /0 with
        // REX.W: imm32 sign-extended to 64 bits).
        m.imm = other->imm.value.u & mask_of(m.size);
    } else if (other->type == ZYDIS_OPERAND_TYPE_REGISTER) {
        ZydisRegister r = other->reg.value;
        m.high8 = r == ZYDIS_REGISTER_AH || r == ZYDIS_REGISTER_CH || r == ZYDIS_REGISTER_DH || r == ZYDIS_REGISTER_BH;
        ZydisRegister full = ZydisRegisterGetLargestEnclosing(ZYDIS_MACHINE_MODE_LONG_64, r);
        if (full < ZYDIS_REGISTER_RAX || full > ZYDIS_REGISTER_R15)
            return make_unexpected(std::string("MMIO to or from a non-general-purpose register is not emulated"));
        m.reg = unsigned(full - ZYDIS_REGISTER_RAX);
        m.reg_size = other->size / 8;
    } else {
        return make_unexpected(std::string("unexpected operand for an MMIO access"));
    }
    return m;
}

uint64_t apply_mmio_read(MmioInsn const& m, uint64_t old_reg, uint64_t value)
{
    value &= mask_of(m.size);
    if (m.kind == MmioInsn::Kind::MovSx) {
        unsigned shift = 64 - 8 * m.size;
        value = uint64_t(int64_t(value << shift) >> shift) & mask_of(m.reg_size);
    }
    if (m.high8)
        return (old_reg & ~0xFF00ull) | ((value & 0xFF) << 8);
    switch (m.reg_size) {
    case 8: return value;
    case 4: return value & 0xFFFFFFFFull; // zero-extended to 64 bits
    default: return (old_reg & ~mask_of(m.reg_size)) | (value & mask_of(m.reg_size));
    }
}

uint64_t mmio_write_value(MmioInsn const& m, uint64_t reg_value)
{
    if (!m.reg)
        return m.imm;
    return (m.high8 ? reg_value >> 8 : reg_value) & mask_of(m.size);
}

} // namespace sevemu::vmm
