// sevemu — std::unique_ptr for OpenSSL objects: the deleter is the object's own free function,
// named once where the alias is made (OsslPtr<BIGNUM, BN_clear_free> for secrets,
// OsslPtr<BIGNUM, BN_free> for public numbers). Included by .cpp files only.
#pragma once

#include <memory>

namespace sevemu::firmware {

template <auto FreeFn>
struct OsslFree {
    template <class T>
    void operator()(T* p) const { FreeFn(p); }
};

template <class T, auto FreeFn>
using OsslPtr = std::unique_ptr<T, OsslFree<FreeFn>>;

} // namespace sevemu::firmware
