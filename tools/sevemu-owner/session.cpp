// The guest owner's half of LAUNCH_START (SEV-KM API 55766 "LAUNCH_START"; virtee/sev src/session):
// a fresh GODH key pair, ECDH with the platform's PDH, and TEK/TIK wrapped under keys only that
// platform's firmware can derive.
#include "tools/sevemu-owner/owner.h"

namespace sevemu::owner {

using namespace sevemu::firmware;

static OwnerResult<PKey> pdh_public_key(std::span<const uint8_t> pdh_bytes)
{
    if (pdh_bytes.size() != kSevCertSize)
        return make_unexpected(OwnerError { "PDH certificate must be " + std::to_string(kSevCertSize) + " bytes, got "
            + std::to_string(pdh_bytes.size()) });
    auto pdh = SevCert::parse(pdh_bytes);
    if (!pdh)
        return make_unexpected(OwnerError { "PDH certificate invalid: " + std::string(cert_error_name(pdh.error())) });
    // The session keys are wrapped for whoever holds this key: it must be a key-agreement key
    // of the PDH role, or the owner could be made to encrypt its TEK to some other key.
    if (pdh->usage() != SevUsage::PDH || !sev_algo_is_ecdh(*pdh->algo()))
        return make_unexpected(OwnerError { "certificate is not a PDH (usage " + std::to_string(pdh->usage_code())
            + ", algo " + std::to_string(pdh->algo_code()) + ")" });
    auto key = pdh->public_key();
    if (!key)
        return make_unexpected(OwnerError { "PDH public key invalid: " + std::string(cert_error_name(key.error())) });
    return std::move(key).value();
}

OwnerResult<Session> make_session(std::span<const uint8_t> pdh_cert, uint32_t policy, SessionInputs const& in)
{
    PKey pdh_pub = TRY(pdh_public_key(pdh_cert));
    auto z = ecdh_p384(in.godh.get(), pdh_pub.get());
    if (!z)
        return make_unexpected(OwnerError { "ECDH with the PDH failed: " + std::string(crypto_error_name(z.error())) });
    SessionBlob blob = wrap_session(*z, in.nonce, in.keys, in.wrap_iv, policy);
    secure_zero(z->data(), z->size());

    // The GODH certificate: api 0.0 (not made by firmware), usage PDH, ECDH_SHA256, unsigned —
    // LAUNCH_START checks only its form and point (AMD-ASPFW sev_mcmd.c).
    auto godh = SevCert::make_ec(0, 0, SevUsage::PDH, SevAlgo::ECDH_SHA256, in.godh.get());
    if (!godh)
        return make_unexpected(OwnerError { "GODH certificate: " + std::string(cert_error_name(godh.error())) });

    Session s;
    s.godh_cert = godh->serialize();
    auto blob_bytes = session_blob_bytes(blob);
    s.session_blob.assign(blob_bytes.begin(), blob_bytes.end());
    s.keys = in.keys;
    s.policy = policy;
    return s;
}

OwnerResult<Session> make_session(std::span<const uint8_t> pdh_cert, uint32_t policy)
{
    auto fail = [](CryptoError e) { return OwnerError { "random generation failed: " + std::string(crypto_error_name(e)) }; };
    SessionInputs in;
    auto godh = p384_generate();
    if (!godh)
        return make_unexpected(fail(godh.error()));
    in.godh = std::move(godh).value();
    if (auto r = random_bytes(in.nonce); !r)
        return make_unexpected(fail(r.error()));
    if (auto r = random_bytes(in.wrap_iv); !r)
        return make_unexpected(fail(r.error()));
    if (auto r = random_bytes(in.keys.tek); !r)
        return make_unexpected(fail(r.error()));
    if (auto r = random_bytes(in.keys.tik); !r)
        return make_unexpected(fail(r.error()));
    auto s = make_session(pdh_cert, policy, in);
    secure_zero(&in.keys, sizeof(in.keys));
    return s;
}

} // namespace sevemu::owner
