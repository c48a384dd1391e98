#include "base/trace.h"

namespace sevemu {

bool glob_match(std::string_view pattern, std::string_view text)
{
    size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
    while (t < text.size()) {
        if (p < pattern.size() && (pattern[p] == text[t] || pattern[p] == '?')) {
            ++p;
            ++t;
        } else if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            mark = t;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            t = ++mark;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*')
        ++p;
    return p == pattern.size();
}

bool Trace::enabled(std::string_view category) const
{
    for (auto const& pat : m_patterns) {
        if (glob_match(pat, category))
            return true;
        // "psp" also enables "psp.state" and other sub-categories.
        if (category.size() > pat.size() && category.substr(0, pat.size()) == pat && category[pat.size()] == '.')
            return true;
    }
    return false;
}

void Trace::emit(std::string_view category, std::string_view message) const
{
    if (!enabled(category))
        return;
    if (m_capture)
        m_captured.emplace_back(message);
    if (m_out) {
        std::fprintf(m_out, "%.*s: %.*s\n", int(category.size()), category.data(), int(message.size()), message.data());
        std::fflush(m_out);
    }
}

} // namespace sevemu
