// sevemu — the instruction behind an MMIO #NPF, decoded from the decode-assist bytes the CPU put
// in the VMCB (APM vol 2 §15.8.4), so that the hypervisor can emulate the access without reading
// guest memory — which for an SEV guest it could not (KVM does the same with
// svm->vmcb->control.insn_bytes for SEV guests). The forms compilers and drivers use for device
// registers are supported: MOV r/m<->reg, MOV r/m<-imm, MOV moffs, MOVZX, MOVSX, MOVNTI. Decoding
// is Zydis's (kept out of this header).
#pragma once

#include "base/result.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace sevemu::vmm {

enum class CodeSize : uint8_t { Bits16, Bits32, Bits64 };

struct MmioInsn {
    enum class Kind : uint8_t { Mov, MovZx, MovSx };
    Kind kind { Kind::Mov };
    unsigned length {};      // instruction length in bytes (RIP advance)
    unsigned size {};        // access size in bytes: 1, 2, 4, 8
    bool write {};           // memory is the destination
    // The register operand (destination of a read, source of a write): x86 number 0-15, and
    // whether it is AH/CH/DH/BH. Absent for a write of an immediate.
    std::optional<unsigned> reg;
    bool high8 {};
    unsigned reg_size {};    // width of the register operand in bytes
    uint64_t imm {};         // the immediate of a write, already extended to `size`
};

Result<MmioInsn, std::string> decode_mmio_insn(std::span<uint8_t const> bytes, CodeSize mode);

// A register after an MMIO read of `value` into it, with x86's width rules (a 32-bit write
// zero-extends to 64 bits, 8- and 16-bit writes merge; MOVZX/MOVSX extend first).
uint64_t apply_mmio_read(MmioInsn const&, uint64_t old_reg, uint64_t value);
// The value an MMIO write stores, from the source register (when there is one).
uint64_t mmio_write_value(MmioInsn const&, uint64_t reg_value);

} // namespace sevemu::vmm
