// A CPU's state through a snapshot section (cpu/cpu_state_io.h) and back into a fresh CPU: for
// programs exercising integer code, the x87 stack, SSE with a changed MXCSR, a switch from
// protected mode into long mode with paging, and an interpreted hypervisor running a nested guest
// under nested paging (VMRUN/VMMCALL), the state is taken after N instructions (N from a seeded
// RNG), saved, parsed, loaded into a new Cpu over a copy of the memory, and both run to their
// end: the final states (every field) and memories must be identical. Then the refusals: every
// truncation, impossible values, a CPL a VMCB set.
//
// The programs were assembled with GNU as 2.40 (`as --64`, `objcopy -O binary -j .text`); their
// source is beside each byte array.
#include "cpu/cpu_state_io.h"
#include "cpu/svm/vmcb.h"
#include "tests/cpu/harness.h"

#include <cstring>
#include <functional>
#include <random>
#include <sstream>

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

namespace {

// int (GNU as, .intel_syntax noprefix):
//  start:
//   mov ecx, 3000
//   mov rax, 0x123456789
//   mov rdi, 0x20000
//   xor ebx, ebx
//  1:
//   imul rax, rax, 0x5851F42D
//   add rax, rcx
//   mov rdx, rax
//   shr rdx, 17
//   xor rbx, rdx
//   rol rbx, 5
//   adc rbx, rcx
//   push rbx
//   pop rsi
//   mov r8, rcx
//   and r8, 0xff
//   mov [rdi + r8*8], rsi
//   cmp esi, 0x80000000
//   cmovb r9, rsi
//   setnz r10b
//   call 2f
//   dec ecx
//   jnz 1b
//   lea rsi, [rdi]
//   lea rdi, [rdi + 0x2000]
//   mov ecx, 256
//   rep movsq
//   hlt
//  2:
//   inc qword ptr [rdi + 0x1000]
//   ret
const std::vector<uint8_t> kIntegerProgram = {
    0xB9, 0xB8, 0x0B, 0x00, 0x00, 0x48, 0xB8, 0x89, 0x67, 0x45, 0x23, 0x01, 0x00, 0x00, 0x00, 0x48,
    0xC7, 0xC7, 0x00, 0x00, 0x02, 0x00, 0x31, 0xDB, 0x48, 0x69, 0xC0, 0x2D, 0xF4, 0x51, 0x58, 0x48,
    0x01, 0xC8, 0x48, 0x89, 0xC2, 0x48, 0xC1, 0xEA, 0x11, 0x48, 0x31, 0xD3, 0x48, 0xC1, 0xC3, 0x05,
    0x48, 0x11, 0xCB, 0x53, 0x5E, 0x49, 0x89, 0xC8, 0x49, 0x81, 0xE0, 0xFF, 0x00, 0x00, 0x00, 0x4A,
    0x89, 0x34, 0xC7, 0x81, 0xFE, 0x00, 0x00, 0x00, 0x80, 0x4C, 0x0F, 0x42, 0xCE, 0x41, 0x0F, 0x95,
    0xC2, 0xE8, 0x17, 0x00, 0x00, 0x00, 0xFF, 0xC9, 0x75, 0xBE, 0x48, 0x8D, 0x37, 0x48, 0x8D, 0xBF,
    0x00, 0x20, 0x00, 0x00, 0xB9, 0x00, 0x01, 0x00, 0x00, 0xF3, 0x48, 0xA5, 0xF4, 0x48, 0xFF, 0x87,
    0x00, 0x10, 0x00, 0x00, 0xC3,
};

// x87 (GNU as, .intel_syntax noprefix):
//  start:
//   mov rdi, 0x20000
//   finit
//   mov ecx, 400
//   fld qword ptr [rdi]
//   fld qword ptr [rdi + 8]
//  1:
//   fld st(1)
//   fmul st(0), st(1)
//   fsqrt
//   fadd qword ptr [rdi + 16]
//   mov eax, ecx
//   and eax, 31
//   fstp qword ptr [rdi + rax*8 + 0x100]
//   fxch st(1)
//   fmul qword ptr [rdi + 8]
//   fxch st(1)
//   fld st(0)
//   fmulp st(2), st(0)
//   fldpi
//   fdivr st(0), st(1)
//   fistp dword ptr [rdi + rax*4 + 0x200]
//   dec ecx
//   jnz 1b
//   fld1
//   fldpi
//   fmulp st(1), st(0)
//   fstp tbyte ptr [rdi + 0x300]
//   fld1
//   fnstsw ax
//   mov [rdi + 0x310], ax
//   fnstenv [rdi + 0x320]
//   hlt
const std::vector<uint8_t> kX87Program = {
    0x48, 0xC7, 0xC7, 0x00, 0x00, 0x02, 0x00, 0x9B, 0xDB, 0xE3, 0xB9, 0x90, 0x01, 0x00, 0x00, 0xDD,
    0x07, 0xDD, 0x47, 0x08, 0xD9, 0xC1, 0xD8, 0xC9, 0xD9, 0xFA, 0xDC, 0x47, 0x10, 0x89, 0xC8, 0x83,
    0xE0, 0x1F, 0xDD, 0x9C, 0xC7, 0x00, 0x01, 0x00, 0x00, 0xD9, 0xC9, 0xDC, 0x4F, 0x08, 0xD9, 0xC9,
    0xD9, 0xC0, 0xDE, 0xCA, 0xD9, 0xEB, 0xD8, 0xF9, 0xDB, 0x9C, 0x87, 0x00, 0x02, 0x00, 0x00, 0xFF,
    0xC9, 0x75, 0xD1, 0xD9, 0xE8, 0xD9, 0xEB, 0xDE, 0xC9, 0xDB, 0xBF, 0x00, 0x03, 0x00, 0x00, 0xD9,
    0xE8, 0xDF, 0xE0, 0x66, 0x89, 0x87, 0x10, 0x03, 0x00, 0x00, 0xD9, 0xB7, 0x20, 0x03, 0x00, 0x00,
    0xF4,
};

// sse (GNU as, .intel_syntax noprefix):
//  start:
//   mov rdi, 0x20000
//   movdqu xmm0, [rdi]
//   movdqu xmm1, [rdi + 16]
//   movaps xmm2, [rdi + 32]
//   movsd xmm4, [rdi + 48]
//   ldmxcsr [rdi + 56]
//   mov ecx, 500
//  1:
//   paddd xmm0, xmm1
//   pshufd xmm1, xmm0, 0x93
//   pxor xmm1, xmm2
//   cvtsi2sd xmm3, ecx
//   mulsd xmm4, xmm3
//   sqrtsd xmm5, xmm4
//   cvtdq2ps xmm7, xmm0
//   addps xmm6, xmm7
//   mulps xmm6, xmm2
//   movdqu [rdi + 0x100], xmm6
//   movq r8, xmm5
//   add [rdi + 0x110], r8
//   pmovmskb eax, xmm0
//   add [rdi + 0x118], eax
//   stmxcsr [rdi + 0x120]
//   cmp ecx, 250
//   jne 2f
//   ldmxcsr [rdi + 60]
//  2:
//   dec ecx
//   jnz 1b
//   movdqu [rdi + 0x130], xmm0
//   movdqu [rdi + 0x140], xmm1
//   movdqu [rdi + 0x150], xmm4
//   hlt
const std::vector<uint8_t> kSseProgram = {
    0x48, 0xC7, 0xC7, 0x00, 0x00, 0x02, 0x00, 0xF3, 0x0F, 0x6F, 0x07, 0xF3, 0x0F, 0x6F, 0x4F, 0x10,
    0x0F, 0x28, 0x57, 0x20, 0xF2, 0x0F, 0x10, 0x67, 0x30, 0x0F, 0xAE, 0x57, 0x38, 0xB9, 0xF4, 0x01,
    0x00, 0x00, 0x66, 0x0F, 0xFE, 0xC1, 0x66, 0x0F, 0x70, 0xC8, 0x93, 0x66, 0x0F, 0xEF, 0xCA, 0xF2,
    0x0F, 0x2A, 0xD9, 0xF2, 0x0F, 0x59, 0xE3, 0xF2, 0x0F, 0x51, 0xEC, 0x0F, 0x5B, 0xF8, 0x0F, 0x58,
    0xF7, 0x0F, 0x59, 0xF2, 0xF3, 0x0F, 0x7F, 0xB7, 0x00, 0x01, 0x00, 0x00, 0x66, 0x49, 0x0F, 0x7E,
    0xE8, 0x4C, 0x01, 0x87, 0x10, 0x01, 0x00, 0x00, 0x66, 0x0F, 0xD7, 0xC0, 0x01, 0x87, 0x18, 0x01,
    0x00, 0x00, 0x0F, 0xAE, 0x9F, 0x20, 0x01, 0x00, 0x00, 0x81, 0xF9, 0xFA, 0x00, 0x00, 0x00, 0x75,
    0x04, 0x0F, 0xAE, 0x57, 0x3C, 0xFF, 0xC9, 0x75, 0xA9, 0xF3, 0x0F, 0x7F, 0x87, 0x30, 0x01, 0x00,
    0x00, 0xF3, 0x0F, 0x7F, 0x8F, 0x40, 0x01, 0x00, 0x00, 0xF3, 0x0F, 0x7F, 0xA7, 0x50, 0x01, 0x00,
    0x00, 0xF4,
};

// mode (GNU as, .intel_syntax noprefix):
//  start:
//   mov ecx, 200
//   mov eax, 7
//  1:
//   imul eax, eax, 13
//   add eax, ecx
//   mov [0x20000 + ecx*4], eax
//   dec ecx
//   jnz 1b
//   mov eax, cr4
//   or eax, 0x20
//   mov cr4, eax
//   mov eax, 0x1000
//   mov cr3, eax
//   mov ecx, 0xC0000080
//   rdmsr
//   or eax, 0x900
//   wrmsr
//   mov eax, cr0
//   or eax, 0x80010000
//   mov cr0, eax
//   .byte 0xEA
//   .long 0x10000 + (long_entry - start)
//   .word 0x08
//   .code64
//  long_entry:
//   mov rsp, 0x80000
//   mov ecx, 300
//   mov rdi, 0x100000
//  2:
//   mov rax, rcx
//   shl rax, 12
//   and eax, 0x3F000
//   lea rsi, [rdi + rax]
//   mov [rsi + 8], rcx
//   invlpg [rsi]
//   add [rsi + 8], rcx
//   test ecx, 15
//   jnz 3f
//   mov rax, cr3
//   mov cr3, rax
//  3:
//   push rcx
//   pop rdx
//   dec ecx
//   jnz 2b
//   hlt
const std::vector<uint8_t> kModeSwitchProgram = {
    0xB9, 0xC8, 0x00, 0x00, 0x00, 0xB8, 0x07, 0x00, 0x00, 0x00, 0x6B, 0xC0, 0x0D, 0x01, 0xC8, 0x89,
    0x04, 0x8D, 0x00, 0x00, 0x02, 0x00, 0x49, 0x75, 0xF1, 0x0F, 0x20, 0xE0, 0x83, 0xC8, 0x20, 0x0F,
    0x22, 0xE0, 0xB8, 0x00, 0x10, 0x00, 0x00, 0x0F, 0x22, 0xD8, 0xB9, 0x80, 0x00, 0x00, 0xC0, 0x0F,
    0x32, 0x0D, 0x00, 0x09, 0x00, 0x00, 0x0F, 0x30, 0x0F, 0x20, 0xC0, 0x0D, 0x00, 0x00, 0x01, 0x80,
    0x0F, 0x22, 0xC0, 0xEA, 0x4A, 0x00, 0x01, 0x00, 0x08, 0x00, 0x48, 0xC7, 0xC4, 0x00, 0x00, 0x08,
    0x00, 0xB9, 0x2C, 0x01, 0x00, 0x00, 0x48, 0xC7, 0xC7, 0x00, 0x00, 0x10, 0x00, 0x48, 0x89, 0xC8,
    0x48, 0xC1, 0xE0, 0x0C, 0x25, 0x00, 0xF0, 0x03, 0x00, 0x48, 0x8D, 0x34, 0x07, 0x48, 0x89, 0x4E,
    0x08, 0x0F, 0x01, 0x3E, 0x48, 0x01, 0x4E, 0x08, 0xF7, 0xC1, 0x0F, 0x00, 0x00, 0x00, 0x75, 0x06,
    0x0F, 0x20, 0xD8, 0x0F, 0x22, 0xD8, 0x51, 0x5A, 0xFF, 0xC9, 0x75, 0xD1, 0xF4,
};

// svm (GNU as, .intel_syntax noprefix):
//  host:
//   mov ecx, 0xC0010117
//   mov eax, 0x50000
//   xor edx, edx
//   wrmsr
//   mov ecx, 0xC0000080
//   rdmsr
//   or eax, 0x1000
//   wrmsr
//   mov r12d, 12
//  1:
//   mov eax, 0x40000
//   vmrun
//   mov rbx, [0x400C8]
//   mov [0x40578], rbx
//   add [0x20800], rbx
//   mov r13, [0x40070]
//   add [0x20808], r13
//   dec r12d
//   jnz 1b
//   hlt
//  guest:
//   mov ecx, 40
//  2:
//   imul rdx, rdx, 31
//   add rdx, rcx
//   mov [0x21000 + rcx*8], rdx
//   dec ecx
//   jnz 2b
//   vmmcall
//   jmp guest
const std::vector<uint8_t> kSvmProgram = {
    0xB9, 0x17, 0x01, 0x01, 0xC0, 0xB8, 0x00, 0x00, 0x05, 0x00, 0x31, 0xD2, 0x0F, 0x30, 0xB9, 0x80,
    0x00, 0x00, 0xC0, 0x0F, 0x32, 0x0D, 0x00, 0x10, 0x00, 0x00, 0x0F, 0x30, 0x41, 0xBC, 0x0C, 0x00,
    0x00, 0x00, 0xB8, 0x00, 0x00, 0x04, 0x00, 0x0F, 0x01, 0xD8, 0x48, 0x8B, 0x1C, 0x25, 0xC8, 0x00,
    0x04, 0x00, 0x48, 0x89, 0x1C, 0x25, 0x78, 0x05, 0x04, 0x00, 0x48, 0x01, 0x1C, 0x25, 0x00, 0x08,
    0x02, 0x00, 0x4C, 0x8B, 0x2C, 0x25, 0x70, 0x00, 0x04, 0x00, 0x4C, 0x01, 0x2C, 0x25, 0x08, 0x08,
    0x02, 0x00, 0x41, 0xFF, 0xCC, 0x75, 0xCB, 0xF4, 0xB9, 0x28, 0x00, 0x00, 0x00, 0x48, 0x6B, 0xD2,
    0x1F, 0x48, 0x01, 0xCA, 0x48, 0x89, 0x14, 0xCD, 0x00, 0x10, 0x02, 0x00, 0xFF, 0xC9, 0x75, 0xED,
    0x0F, 0x01, 0xD9, 0xEB, 0xE3,
};

constexpr uint64_t kVmcb = 0x40000, kHsave = 0x50000, kSvmGuestEntry = kCode + 0x58;

void data_doubles(Machine& m, std::initializer_list<double> v)
{
    uint64_t a = kData;
    for (double d : v) {
        m.put<double>(a, d);
        a += 8;
    }
}

struct Program {
    char const* name;
    std::function<void(Machine&)> setup; // code, data and the start state
};

std::vector<Program> programs()
{
    return {
        { "integer", [](Machine& m) { m.start(Mode::Long64, kIntegerProgram); } },
        { "x87", [](Machine& m) {
             m.start(Mode::Long64, kX87Program);
             data_doubles(m, { 1.1, 0.9990234375, 0.3333333333333333 });
         } },
        { "sse", [](Machine& m) {
             m.start(Mode::Long64, kSseProgram);
             for (uint64_t k = 0; k < 6; ++k)
                 m.put<uint64_t>(kData + 8 * k, 0x9E3779B97F4A7C15ull * (k + 1));
             m.put<double>(kData + 48, 1.0000001);
             m.put<uint32_t>(kData + 56, 0x1F80);          // round to nearest
             m.put<uint32_t>(kData + 60, 0x1F80 | 0x2000); // then round down, from the middle on
         } },
        { "mode-switch", [](Machine& m) {
             m.start(Mode::Prot32, kModeSwitchProgram);
             m.build_paging64(); // the tables the program's CR3 points at
         } },
        { "svm-nested-guest", [](Machine& m) {
             m.start(Mode::Long64, kSvmProgram);
             svm::Vmcb v {};
             auto icpt = [&](svm::Intercept i) { v.control.intercepts[unsigned(i) / 32] |= 1u << (unsigned(i) % 32); };
             icpt(svm::Intercept::VMRUN);
             icpt(svm::Intercept::VMMCALL);
             v.control.asid = 1;
             v.control.nested_ctl = svm::nested_ctl::NP_ENABLE;
             v.control.nested_cr3 = kPml4; // the harness's identity tables serve as nested tables too
             auto& s = v.save;
             s.cs = svm::VmcbSeg { 0x08, 0xA9B, 0xFFFFFFFF, 0 };
             s.ds = s.es = s.ss = s.fs = s.gs = svm::VmcbSeg { 0x10, 0xC93, 0xFFFFFFFF, 0 };
             s.gdtr = svm::VmcbSeg { 0, 0, 0x57, kGdt };
             s.idtr = svm::VmcbSeg { 0, 0, 256 * 16 - 1, kIdt };
             s.cr0 = cr0::PG | cr0::WP | cr0::ET | cr0::PE;
             s.cr3 = kPml4;
             s.cr4 = cr4::PAE | cr4::OSFXSR | cr4::OSXMMEXCPT;
             s.efer = efer::LME | efer::LMA | efer::SVME | efer::NXE;
             s.rflags = 2;
             s.rip = kSvmGuestEntry;
             s.rsp = 0x38000;
             s.dr6 = 0xFFFF0FF0;
             s.dr7 = 0x400;
             s.g_pat = 0x0007040600070406ull;
             REQUIRE(svm::write_vmcb(*m.mc, Spa(kVmcb), v).has_value());
         } },
    };
}

// Every field of two states that differs, by name.
std::vector<std::string> diff_states(CpuState const& a, CpuState const& b)
{
    std::vector<std::string> d;
    auto hex = [](uint64_t v) {
        std::ostringstream o;
        o << "0x" << std::hex << v;
        return o.str();
    };
    auto cmp = [&](std::string const& name, uint64_t x, uint64_t y) {
        if (x != y) d.push_back(name + ": " + hex(x) + " vs " + hex(y));
    };
    auto seg = [&](std::string const& n, Segment const& x, Segment const& y) {
        cmp(n + ".selector", x.selector, y.selector);
        cmp(n + ".attr", x.attr, y.attr);
        cmp(n + ".limit", x.limit, y.limit);
        cmp(n + ".base", x.base, y.base);
    };
    for (int k = 0; k < 16; ++k) cmp("gpr[" + std::to_string(k) + "]", a.gpr[k], b.gpr[k]);
    cmp("rip", a.rip, b.rip);
    cmp("rflags", a.rflags, b.rflags);
    static char const* const kSeg[6] = { "es", "cs", "ss", "ds", "fs", "gs" };
    for (int k = 0; k < 6; ++k) seg(kSeg[k], a.seg[k], b.seg[k]);
    seg("ldtr", a.ldtr, b.ldtr);
    seg("tr", a.tr, b.tr);
    cmp("gdtr.base", a.gdtr.base, b.gdtr.base);
    cmp("gdtr.limit", a.gdtr.limit, b.gdtr.limit);
    cmp("idtr.base", a.idtr.base, b.idtr.base);
    cmp("idtr.limit", a.idtr.limit, b.idtr.limit);
    cmp("cr0", a.cr0, b.cr0);
    cmp("cr2", a.cr2, b.cr2);
    cmp("cr3", a.cr3, b.cr3);
    cmp("cr4", a.cr4, b.cr4);
    cmp("cr8", a.cr8, b.cr8);
    cmp("efer", a.efer, b.efer);
    for (int k = 0; k < 4; ++k) cmp("dr[" + std::to_string(k) + "]", a.dr[k], b.dr[k]);
    cmp("dr6", a.dr6, b.dr6);
    cmp("dr7", a.dr7, b.dr7);
    cmp("xcr0", a.xcr0, b.xcr0);
    for (int k = 0; k < 16; ++k) {
        cmp("xmm[" + std::to_string(k) + "].lo", a.xmm[k][0], b.xmm[k][0]);
        cmp("xmm[" + std::to_string(k) + "].hi", a.xmm[k][1], b.xmm[k][1]);
    }
    cmp("mxcsr", a.mxcsr, b.mxcsr);
    cmp("tsc", a.tsc, b.tsc);
    if (!(a.msr == b.msr)) d.push_back("msr: differ");
    for (int k = 0; k < 8; ++k)
        if (a.x87.fpr[k] != b.x87.fpr[k]) d.push_back("x87.fpr[" + std::to_string(k) + "]: differ");
    cmp("x87.fcw", a.x87.fcw, b.x87.fcw);
    cmp("x87.fsw", a.x87.fsw, b.x87.fsw);
    cmp("x87.ftw", a.x87.ftw, b.x87.ftw);
    cmp("halted", a.halted, b.halted);
    cmp("interrupt_shadow", a.interrupt_shadow, b.interrupt_shadow);
    cmp("gif", a.gif, b.gif);
    cmp("pending_shutdown", a.pending_shutdown, b.pending_shutdown);
    cmp("nmi_pending", a.nmi_pending, b.nmi_pending);
    cmp("nmi_blocked", a.nmi_blocked, b.nmi_blocked);
    cmp("instructions", a.instructions, b.instructions);
    cmp("svm_guest present", a.svm_guest.has_value(), b.svm_guest.has_value());
    if (a.svm_guest && b.svm_guest && !(*a.svm_guest == *b.svm_guest)) d.push_back("svm_guest: differ");
    // The comparison above must be the whole of CpuState.
    if (d.empty() && !(a == b)) d.push_back("a field diff_states does not list");
    return d;
}

std::string joined(std::vector<std::string> const& v)
{
    std::string s;
    for (auto const& x : v) s += x + "; ";
    return s;
}

std::vector<uint8_t> memory(Machine& m)
{
    std::vector<uint8_t> b(16ull << 20);
    REQUIRE(m.mc->read(Spa(0), b, mmu::KeyId::none()).has_value());
    return b;
}

RunResult run_to_end(Machine& m)
{
    RunResult r {};
    for (int k = 0; k < 100; ++k) {
        r = m.cpu->run(1'000'000);
        if (r.reason != StopReason::InstructionLimit) break;
    }
    return r;
}

std::vector<uint8_t> cpu_section(CpuState const& s)
{
    StateWriter w;
    save_cpu_state(w, s);
    return w.take();
}

// A state with every part in use: long mode, x87 values, a guest mode.
CpuState rich_state()
{
    Machine m;
    programs()[4].setup(m);
    m.cpu->run(200); // inside the guest by now
    auto s = m.cpu->state();
    REQUIRE(s.svm_guest.has_value());
    s.x87.fpr[3] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
    s.x87.ftw = 0x08;
    s.x87.fsw = 0x3800;
    return s;
}

} // namespace

TEST_CASE("cpu state: saved after N instructions and restored into a fresh CPU, a program ends exactly as uninterrupted", "[cpu][snapshot]")
{
    constexpr uint32_t kSeed = 0x5EE5EC10;
    std::mt19937_64 rng(kSeed);
    INFO("seed " << kSeed);
    unsigned in_guest = 0;
    for (auto const& p : programs()) {
        INFO("program " << p.name);
        // The uninterrupted run: its length, and that it ends in HLT (not in an exception stub).
        Machine whole;
        p.setup(whole);
        auto rw = run_to_end(whole);
        REQUIRE(rw.reason == StopReason::Halted);
        REQUIRE(whole.halted_vector() == -1);
        uint64_t total = whole.cpu->state().instructions;
        REQUIRE(total > 500);
        auto whole_state = whole.cpu->state();
        auto whole_mem = memory(whole);

        for (int pick = 0; pick < 6; ++pick) {
            uint64_t n = 1 + rng() % (total - 1);
            INFO("after " << n << " of " << total << " instructions");
            Machine a;
            p.setup(a);
            REQUIRE(a.cpu->run(n).reason == StopReason::InstructionLimit);
            auto st = a.cpu->snapshot_state();
            REQUIRE(st.has_value());
            if (st->svm_guest) ++in_guest;

            SnapshotWriter sw;
            sw.add("cpu0", kCpuStateVersion, cpu_section(*st));
            auto stream = sw.finish();
            auto sections = parse_snapshot(stream);
            REQUIRE(sections.has_value());
            auto loaded = load_cpu_section(sections->at(0));
            REQUIRE(loaded.has_value());
            CHECK(joined(diff_states(*st, *loaded)) == "");

            Machine b;
            b.write(0, memory(a));
            b.cpu->set_state(*loaded);
            CHECK(joined(diff_states(b.cpu->state(), *st)) == "");

            auto ra = run_to_end(a);
            auto rb = run_to_end(b);
            CHECK(ra.reason == StopReason::Halted);
            CHECK(rb.reason == StopReason::Halted);
            CHECK(joined(diff_states(a.cpu->state(), b.cpu->state())) == "");
            CHECK(joined(diff_states(b.cpu->state(), whole_state)) == "");
            CHECK(b.cpu->stats().instructions == total);
            bool b_memory_same = memory(b) == whole_mem; // (a bool: Catch would print 16 MiB)
            bool a_memory_same = memory(a) == whole_mem;
            CHECK(b_memory_same);
            CHECK(a_memory_same);
        }
    }
    CHECK(in_guest > 0); // some picks stopped inside the nested guest
}

TEST_CASE("cpu state: RDTSC continues exactly after a restore, even in the middle of a block", "[cpu][snapshot]")
{
    //   mov ecx, 10 / 1: dec ecx / jnz 1b / nop / nop / nop / rdtsc / shl rdx, 32 / or rax, rdx /
    //   mov [0x20008], rax / hlt
    // RDTSC follows three NOPs in one decoded block; the restored CPU starts its block after the
    // first NOP, the uninterrupted one before it: both must read the same TSC.
    std::vector<uint8_t> code = { 0xB9, 0x0A, 0x00, 0x00, 0x00, 0xFF, 0xC9, 0x75, 0xFC, 0x90, 0x90, 0x90, 0x0F, 0x31,
        0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0x48, 0x89, 0x04, 0x25, 0x08, 0x00, 0x02, 0x00, 0xF4 };
    constexpr uint64_t kTsc = 1'000'000'007, kBefore = 12345;
    auto start = [&](Machine& m) {
        m.start(Mode::Long64, code);
        auto s0 = m.cpu->state();
        s0.tsc = kTsc;             // a TSC far from the instruction count (WRMSR TSC, a VMM)
        s0.instructions = kBefore; // and a CPU that has run before
        m.cpu->set_state(s0);
    };
    Machine whole;
    start(whole);
    run_to_end(whole);
    // 1 MOV + 10 x (DEC, JNZ) + 3 NOPs retired before RDTSC.
    CHECK(whole.get<uint64_t>(kData + 8) == kTsc + 24);

    Machine a;
    start(a);
    a.cpu->run(22); // after the first NOP
    auto st = *a.cpu->snapshot_state();
    CHECK(st.instructions == kBefore + 22);
    CHECK(st.tsc == kTsc + 22);
    Machine b;
    b.write(0, memory(a));
    auto payload = cpu_section(st);
    StateReader r("cpu0", payload);
    CpuState loaded;
    load_cpu_state(r, loaded);
    REQUIRE(r.finish().has_value());
    b.cpu->set_state(loaded);
    CHECK(b.cpu->stats().instructions == kBefore + 22);
    run_to_end(a);
    run_to_end(b);
    CHECK(a.get<uint64_t>(kData + 8) == kTsc + 24);
    CHECK(b.get<uint64_t>(kData + 8) == kTsc + 24);
}

TEST_CASE("cpu state: every truncation of a section is refused and the output untouched", "[cpu][snapshot]")
{
    auto s = rich_state();
    auto payload = cpu_section(s);
    CpuState sentinel;
    sentinel.rip = 0xDEADBEEF;
    for (size_t len = 0; len < payload.size(); ++len) {
        INFO("length " << len << " of " << payload.size());
        CpuState out = sentinel;
        StateReader r("cpu0", std::span(payload).first(len));
        load_cpu_state(r, out);
        auto f = r.finish();
        REQUIRE_FALSE(f.has_value());
        CHECK(f.error().text().rfind("snapshot section 'cpu0': truncated payload", 0) == 0);
        CHECK(out == sentinel);
    }
    // The whole payload loads, and is exactly the state.
    CpuState out = sentinel;
    StateReader r("cpu0", payload);
    load_cpu_state(r, out);
    REQUIRE(r.finish().has_value());
    CHECK(joined(diff_states(out, s)) == "");
    // One byte more is refused.
    auto longer = payload;
    longer.push_back(0);
    out = sentinel;
    StateReader r2("cpu0", longer);
    load_cpu_state(r2, out);
    CHECK(r2.finish().error().text() == "snapshot section 'cpu0': 1 trailing bytes after the CPU state");
    CHECK(out == sentinel);
    // A section of another version is refused before a byte is read.
    SnapshotSection sec { "cpu0", kCpuStateVersion + 1, payload };
    CHECK(load_cpu_section(sec).error().text() == "snapshot section 'cpu0': unsupported CPU state version 3 (this build reads version 2)");
}

TEST_CASE("cpu state: impossible values are refused with the reason, the output untouched", "[cpu][snapshot]")
{
    auto base = rich_state();
    REQUIRE(check_cpu_state(base) == "");
    struct Case {
        char const* message;
        std::function<void(CpuState&)> mutate;
    };
    std::vector<Case> cases = {
        { "RFLAGS reserved bits wrong (0x8)", [](CpuState& s) { s.rflags = 8; } },
        { "RFLAGS reserved bits wrong (0x400002)", [](CpuState& s) { s.rflags = 0x400002; } },
        { "CR0 bits 63:32 set", [](CpuState& s) { s.cr0 |= 1ull << 32; } },
        { "CR0.PG without CR0.PE", [](CpuState& s) { s.cr0 &= ~cr0::PE; } },
        { "CR0.NW without CR0.CD", [](CpuState& s) { s.cr0 |= cr0::NW; } },
        { "CR4 reserved bits set (0x10000620)", [](CpuState& s) { s.cr4 |= 1u << 28; } },
        { "EFER reserved bits set (0x11d00)", [](CpuState& s) { s.efer |= 1u << 16; } },
        { "EFER.LMA without CR0.PG", [](CpuState& s) { s.cr0 &= ~cr0::PG; } },
        { "EFER.LMA without EFER.LME", [](CpuState& s) { s.efer &= ~efer::LME; } },
        { "EFER.LMA without CR4.PAE", [](CpuState& s) { s.cr4 &= ~cr4::PAE; } },
        { "CS.L and CS.D both set in long mode", [](CpuState& s) { s.seg[CS].attr |= 0x400; } },
        { "CR3 bits 63:52 set in long mode", [](CpuState& s) { s.cr3 |= 1ull << 60; } },
        { "CR8 bits 63:4 set", [](CpuState& s) { s.cr8 = 16; } },
        { "DR6 bits 63:32 set", [](CpuState& s) { s.dr6 |= 1ull << 40; } },
        { "DR7 bits 63:32 set", [](CpuState& s) { s.dr7 |= 1ull << 40; } },
        { "XCR0 0x2 not x87 plus optionally SSE", [](CpuState& s) { s.xcr0 = 2; } },
        { "XCR0 0x7 not x87 plus optionally SSE", [](CpuState& s) { s.xcr0 = 7; } },
        { "MXCSR reserved bits set", [](CpuState& s) { s.mxcsr |= 1u << 16; } },
        { "reserved segment attribute bits set in SS", [](CpuState& s) { s.seg[SS].attr |= 0x1000; } },
        { "reserved segment attribute bits set in TR", [](CpuState& s) { s.tr.attr |= 0x8000; } },
        { "GS base not canonical", [](CpuState& s) { s.seg[GS].base = 0x0000800000000000ull; } },
        { "PAT entry 2 has reserved memory type 2", [](CpuState& s) { s.msr.pat = 0x0007040600020406ull; } },
        { "MTRR_DEF_TYPE reserved bits set", [](CpuState& s) { s.msr.mtrr_def_type = 0x100; } },
        { "VM_HSAVE_PA not 4 KiB aligned", [](CpuState& s) { s.msr.vm_hsave_pa = 0x50010; } },
        { "TSC_AUX bits 63:32 set", [](CpuState& s) { s.msr.tsc_aux = 1ull << 32; } },
        { "SVM guest mode with EFER.SVME clear", [](CpuState& s) { s.efer &= ~efer::SVME; } },
        { "SVM guest mode: VMCB address 0x40010 not 4 KiB aligned", [](CpuState& s) { s.svm_guest->vmcb = 0x40010; } },
        { "SVM guest mode: host save area 0x50008 not 4 KiB aligned", [](CpuState& s) { s.svm_guest->hsave = 0x50008; } },
        { "SVM guest mode: the control area does not intercept VMRUN", [](CpuState& s) { s.svm_guest->control[16] = 0; } },
        { "SVM guest mode: ASID 0 (the host's)", [](CpuState& s) { s.svm_guest->asid = 0; } },
        { "SVM guest mode: ASID 2 differs from the control area's 1", [](CpuState& s) { s.svm_guest->asid = 2; } },
        { "SVM guest mode: SEV without nested paging", [](CpuState& s) { s.svm_guest->sev = true; s.svm_guest->np = false; } },
        { "SVM guest mode: SEV-ES without SEV", [](CpuState& s) { s.svm_guest->sev_es = true; } },
        { "SVM guest mode: bad TLB flush action 4", [](CpuState& s) { s.svm_guest->tlb_flush = 4; } },
        { "SVM guest mode: nested paging C-bit 64 / physical width 48 impossible", [](CpuState& s) { s.svm_guest->npt_c_bit = 64; } },
        { "SVM guest mode: invalid EVENTINJ 0x80000102", [](CpuState& s) { s.svm_guest->event_inj = 0x80000102; } },
    };
    for (auto const& c : cases) {
        INFO(c.message);
        CpuState bad = base;
        c.mutate(bad);
        CHECK(check_cpu_state(bad) == c.message);
        auto payload = cpu_section(bad);
        CpuState out;
        out.rip = 0xDEADBEEF;
        CpuState before = out;
        StateReader r("cpu0", payload);
        load_cpu_state(r, out);
        auto f = r.finish();
        REQUIRE_FALSE(f.has_value());
        CHECK(f.error().text() == std::string("snapshot section 'cpu0': ") + c.message);
        CHECK(out == before);
    }
    // A boolean other than 0/1 in the payload (the halted flag, the first byte after the x87 tag).
    auto payload = cpu_section(base);
    size_t halted_at = 16 * 8 + 16 + 8 * 16 + 2 * 10 + 6 * 8 + 4 * 8 + 3 * 8 + 16 * 16 + 4 + 8 + 12 * 8 + 16 * 8 + 11 * 8 + 7 * 8 + 80 + 5;
    REQUIRE(payload[halted_at] == uint8_t(base.halted));
    payload[halted_at] = 2;
    StateReader r("cpu0", payload);
    CpuState out;
    load_cpu_state(r, out);
    CHECK(r.finish().error().message == "boolean at offset " + std::to_string(halted_at) + " is 0x02, not 0 or 1");
}

TEST_CASE("cpu state: a CPL that VMRUN loaded and the segments do not give cannot be carried", "[cpu][snapshot][svm]")
{
    Machine m;
    programs()[4].setup(m);
    auto v = *svm::read_vmcb(*m.mc, Spa(kVmcb));
    v.save.cpl = 3; // SS.DPL stays 0
    REQUIRE(svm::write_vmcb(*m.mc, Spa(kVmcb), v).has_value());
    m.cpu->run(30);
    REQUIRE(m.cpu->in_guest_mode());
    auto s = m.cpu->snapshot_state();
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error() == "CPL 3 differs from the 0 the segment registers give (a VMCB's CPL field); it cannot be carried");
}

TEST_CASE("cpu state: the interrupt shadow, HLT and GIF are carried", "[cpu][snapshot]")
{
    // Restores `a`'s state into a fresh machine over a copy of its memory.
    auto clone = [](Machine& a, Machine& b) {
        auto st = a.cpu->snapshot_state();
        REQUIRE(st.has_value());
        auto payload = cpu_section(*st);
        auto loaded = load_cpu_section(SnapshotSection { "cpu0", kCpuStateVersion, payload });
        REQUIRE(loaded.has_value());
        b.write(0, memory(a));
        b.cpu->set_state(*loaded);
        return *st;
    };
    auto same_end = [](Machine& a, Machine& b) {
        a.io.irq = b.io.irq = true;
        a.io.irq_vector = b.io.irq_vector = 0x20;
        auto ra = run_to_end(a);
        auto rb = run_to_end(b);
        CHECK(ra.reason == rb.reason);
        CHECK(joined(diff_states(a.cpu->state(), b.cpu->state())) == "");
        bool same_memory = memory(a) == memory(b);
        CHECK(same_memory);
    };
    SECTION("STI's shadow: the interrupt comes after the HLT that follows it")
    {
        Machine a, b;
        a.start(Mode::Long64, { 0xFB, 0xF4, 0xF4 }); // sti; hlt; hlt
        REQUIRE(a.cpu->run(1).reason == StopReason::InstructionLimit);
        auto st = clone(a, b);
        CHECK(st.interrupt_shadow);
        same_end(a, b);
        CHECK(b.halted_vector() == 0x20);
        CHECK(b.get<uint64_t>(b.cpu->gpr(RSP)) == kCode + 2); // the interrupt returns after the first HLT
    }
    SECTION("halted: the restored CPU stays in HLT until the interrupt")
    {
        Machine a, b;
        a.start(Mode::Long64, { 0xFB, 0x90, 0xF4, 0xF4 }); // sti; nop; hlt; hlt
        REQUIRE(a.cpu->run(10).reason == StopReason::Halted);
        auto st = clone(a, b);
        CHECK(st.halted);
        CHECK(b.cpu->halted());
        CHECK(b.cpu->run(10).reason == StopReason::Halted);
        same_end(a, b);
        CHECK(b.halted_vector() == 0x20);
        CHECK(b.get<uint64_t>(b.cpu->gpr(RSP)) == kCode + 3);
    }
    SECTION("GIF clear: the pending interrupt stays blocked")
    {
        Machine a, b;
        a.start(Mode::Long64, { 0x0F, 0x01, 0xDD, 0xFB, 0x90, 0x90, 0xF4 }); // clgi; sti; nop; nop; hlt
        auto s0 = a.cpu->state();
        s0.efer |= efer::SVME;
        a.cpu->set_state(s0);
        REQUIRE(a.cpu->run(3).reason == StopReason::InstructionLimit);
        auto st = clone(a, b);
        CHECK_FALSE(st.gif);
        same_end(a, b);
        CHECK(b.cpu->halted());
        CHECK(b.cpu->rip() == kCode + 7); // HLT ran: no interrupt was taken
    }
}

TEST_CASE("cpu state: corrupted payloads are refused or load a state that checks and saves back identically", "[cpu][snapshot]")
{
    auto base = cpu_section(rich_state());
    std::mt19937_64 rng(0xC0FFEE);
    unsigned accepted = 0, refused = 0;
    for (int k = 0; k < 4000; ++k) {
        auto p = base;
        unsigned flips = 1 + unsigned(rng() % 4);
        for (unsigned f = 0; f < flips; ++f)
            p[rng() % p.size()] ^= uint8_t(1u << (rng() % 8));
        if (k % 10 == 0) p.resize(rng() % (p.size() + 8)); // sometimes a different length too
        CpuState out;
        out.rip = 0xDEADBEEF;
        CpuState before = out;
        StateReader r("cpu0", p);
        load_cpu_state(r, out);
        if (r.finish()) {
            ++accepted;
            CHECK(check_cpu_state(out) == "");
            CHECK(cpu_section(out) == p); // the layout has no slack: what loads saves back byte for byte
            if (accepted <= 40) { // and the CPU takes it and runs (into whatever memory holds)
                Machine m;
                m.cpu->set_state(out);
                m.cpu->run(2000);
            }
        } else {
            ++refused;
            CHECK(out == before);
        }
    }
    CHECK(accepted > 0);
    CHECK(refused > 0);
}
