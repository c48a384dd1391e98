// sevemu — the overload set for std::visit: one lambda per alternative of a variant. With no
// catch-all lambda, a variant alternative that no lambda takes is a compile error: that is how the
// machine's vCPU exit handling makes forgetting an exit kind impossible.
#pragma once

namespace sevemu {

template<class... Fs>
struct Overloaded : Fs... {
    using Fs::operator()...;
};
template<class... Fs>
Overloaded(Fs...) -> Overloaded<Fs...>;

} // namespace sevemu
