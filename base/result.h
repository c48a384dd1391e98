// sevemu — Result<T, E>: the std::expected API (g++ 12 has no <expected>).
// Errors are values at module boundaries (STYLE.md rule 4); TRY propagates them.
#pragma once

#include <cassert>
#include <type_traits>
#include <utility>
#include <variant>

namespace sevemu {

template <class E>
class Unexpected {
public:
    constexpr explicit Unexpected(E e) : m_error(std::move(e)) {}
    constexpr E const& error() const& { return m_error; }
    constexpr E& error() & { return m_error; }
    constexpr E&& error() && { return std::move(m_error); }

private:
    E m_error;
};

template <class E>
Unexpected(E) -> Unexpected<E>;

template <class T, class E>
class [[nodiscard]] Result {
public:
    using value_type = T;
    using error_type = E;

    constexpr Result()
        requires std::is_default_constructible_v<T>
        : m_storage(std::in_place_index<0>) {}
    constexpr Result(T value) : m_storage(std::in_place_index<0>, std::move(value)) {}
    template <class G>
    constexpr Result(Unexpected<G> u) : m_storage(std::in_place_index<1>, E(std::move(u).error())) {}

    constexpr bool has_value() const { return m_storage.index() == 0; }
    constexpr explicit operator bool() const { return has_value(); }

    constexpr T& value() & { assert(has_value()); return std::get<0>(m_storage); }
    constexpr T const& value() const& { assert(has_value()); return std::get<0>(m_storage); }
    constexpr T&& value() && { assert(has_value()); return std::get<0>(std::move(m_storage)); }
    constexpr T& operator*() & { return value(); }
    constexpr T const& operator*() const& { return value(); }
    constexpr T&& operator*() && { return std::move(*this).value(); }
    constexpr T* operator->() { return &value(); }
    constexpr T const* operator->() const { return &value(); }

    constexpr E const& error() const& { assert(!has_value()); return std::get<1>(m_storage); }
    constexpr E& error() & { assert(!has_value()); return std::get<1>(m_storage); }
    constexpr E&& error() && { assert(!has_value()); return std::get<1>(std::move(m_storage)); }

    template <class U>
    constexpr T value_or(U&& fallback) const& { return has_value() ? value() : T(std::forward<U>(fallback)); }

private:
    std::variant<T, E> m_storage;
};

template <class E>
class [[nodiscard]] Result<void, E> {
public:
    using value_type = void;
    using error_type = E;

    constexpr Result() = default;
    template <class G>
    constexpr Result(Unexpected<G> u) : m_error(E(std::move(u).error())), m_has_value(false) {}

    constexpr bool has_value() const { return m_has_value; }
    constexpr explicit operator bool() const { return m_has_value; }
    constexpr void value() const { assert(m_has_value); }
    constexpr void operator*() const { assert(m_has_value); }
    constexpr E const& error() const& { assert(!m_has_value); return m_error; }
    constexpr E&& error() && { assert(!m_has_value); return std::move(m_error); }

private:
    E m_error {};
    bool m_has_value { true };
};

template <class E>
constexpr Unexpected<std::decay_t<E>> make_unexpected(E&& e) { return Unexpected<std::decay_t<E>>(std::forward<E>(e)); }

} // namespace sevemu

// TRY(expr): evaluate a Result; on error return its error from the enclosing function,
// otherwise yield the value (GNU statement expression, as SerenityOS does).
#define TRY(expr)                                                              \
    ({                                                                         \
        auto&& _try_result = (expr);                                           \
        if (!_try_result.has_value())                                          \
            return ::sevemu::make_unexpected(std::move(_try_result).error());  \
        std::move(_try_result).value();                                        \
    })
