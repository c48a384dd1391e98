// sevemu — what the system-architecture files share (exec_segments.cpp, exec_control.cpp,
// exec_far.cpp, exec_events.cpp, exec_io.cpp, exec_task.cpp): the fields of a segment or system
// descriptor's high doubleword (APM vol 2 §4.7-4.8) and the checks every system handler makes.
#pragma once

#include "cpu/ops.h"

namespace sevemu::cpu::sys {

// Descriptor fields, d being the descriptor's low quadword (APM vol 2 §4.7.1, figure 4-14).
inline bool is_code(uint64_t d) { return (d >> 43) & 1; }
inline bool is_seg(uint64_t d) { return (d >> 44) & 1; }   // S: code/data rather than system
inline unsigned desc_dpl(uint64_t d) { return (d >> 45) & 3; }
inline bool desc_present(uint64_t d) { return (d >> 47) & 1; }
inline unsigned desc_type(uint64_t d) { return (d >> 40) & 0xF; }
// A 48-bit virtual address in canonical form (APM vol 2 §1.1.3).
inline bool canonical(uint64_t a) { return uint64_t(int64_t(a << 16) >> 16) == a; }

inline bool protected_mode(Core const& c) { return (c.cr0 & cr0::PE) && !(c.flags & rflags::VM); }
inline void need_cpl0(Core& c) { if (c.cpl != 0) c.raise(GP, 0); }
inline void end(Core& c) { c.brk = true; } // the instruction ends the decoded block

} // namespace sevemu::cpu::sys
