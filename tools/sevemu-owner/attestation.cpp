// Checking an SEV (non-SNP) attestation report (SEV-KM API 55766 "ATTESTATION"; AMD-ASPFW sev_mcmd.c):
// the PEK signs the launch digest and policy together with the owner's nonce, so the owner can
// learn what was launched without having run the launch itself.
#include "tools/sevemu-owner/owner.h"

#include <cstring>

namespace sevemu::owner {

using namespace sevemu::firmware;

OwnerResult<AttestationReport> verify_attestation_report(std::span<const uint8_t> report, SevCert const& pek,
    std::optional<Nonce128> expected_mnonce)
{
    if (report.size() != sizeof(AttestationReportWire))
        return make_unexpected(OwnerError { "attestation report must be " + std::to_string(sizeof(AttestationReportWire))
            + " bytes, got " + std::to_string(report.size()) });
    AttestationReportWire w;
    std::memcpy(&w, report.data(), sizeof(w));
    if (pek.usage() != SevUsage::PEK)
        return make_unexpected(OwnerError { "the signer certificate is not a PEK" });
    if (w.sig_usage != pek.usage_code() || w.sig_algo != pek.algo_code())
        return make_unexpected(OwnerError { "report is not signed by a PEK (sig_usage " + std::to_string(w.sig_usage)
            + ", sig_algo " + std::to_string(w.sig_algo) + ")" });
    auto algo = pek.algo();
    if (!algo || !sev_algo_is_ecdsa(*algo))
        return make_unexpected(OwnerError { "the PEK is not an ECDSA key" });
    auto key = pek.public_key();
    if (!key)
        return make_unexpected(OwnerError { "PEK public key invalid: " + std::string(cert_error_name(key.error())) });
    AmdEcdsaSig sig;
    std::memcpy(sig.r.data(), w.sig_r, sizeof(w.sig_r));
    std::memcpy(sig.s.data(), w.sig_s, sizeof(w.sig_s));
    // The signature covers mnonce, digest and policy (bytes 0x00..0x33); AMD-ASPFW sev_mcmd.c, virtee/sev
    // src/firmware/host/types/sev.rs.
    if (!ecdsa_p384_verify(key->get(), sev_algo_hash(*algo), report.first(0x34), sig))
        return make_unexpected(OwnerError { "attestation report signature does not verify with this PEK" });
    AttestationReport r;
    std::memcpy(r.mnonce.data(), w.mnonce, 16);
    std::memcpy(r.launch_digest.data(), w.launch_digest, 32);
    r.policy = w.policy;
    if (expected_mnonce && !equal_ct(*expected_mnonce, r.mnonce))
        return make_unexpected(OwnerError { "attestation report answers another request (mnonce " + to_hex(r.mnonce)
            + ", expected " + to_hex(*expected_mnonce) + ")" });
    return r;
}

} // namespace sevemu::owner
