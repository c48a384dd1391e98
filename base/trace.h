// sevemu — human-readable trace (-trace PATTERN, -D FILE), owned by whoever owns the parts
// (the Machine, a test, a tool); never global. Categories are dotted names such as "psp",
// "psp.state", "vmexit"; a pattern is a name or a glob with '*', as QEMU's -trace takes.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace sevemu {

class Trace {
public:
    Trace() = default;
    explicit Trace(FILE* out) : m_out(out) {}

    void set_output(FILE* out) { m_out = out; }
    void enable(std::string pattern) { m_patterns.push_back(std::move(pattern)); }
    bool enabled(std::string_view category) const;
    void emit(std::string_view category, std::string_view message) const;

    // Lines emitted are also kept when capture is on (tests read them).
    void set_capture(bool on) { m_capture = on; }
    std::vector<std::string> const& captured() const { return m_captured; }

private:
    FILE* m_out { stderr };
    std::vector<std::string> m_patterns;
    bool m_capture { false };
    mutable std::vector<std::string> m_captured;
};

bool glob_match(std::string_view pattern, std::string_view text);

} // namespace sevemu
