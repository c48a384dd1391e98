#include "firmware/cert_chain.h"

namespace sevemu::firmware {

std::string_view chain_link_name(ChainLink l)
{
    switch (l) {
    case ChainLink::ARK:
        return "ARK (self-signed)";
    case ChainLink::ARK_ASK:
        return "ARK -> ASK";
    case ChainLink::ASK_CEK:
        return "ASK -> CEK";
    case ChainLink::OCA:
        return "OCA (self-signed)";
    case ChainLink::CEK_PEK:
        return "CEK -> PEK";
    case ChainLink::OCA_PEK:
        return "OCA -> PEK";
    case ChainLink::PEK_PDH:
        return "PEK -> PDH";
    case ChainLink::PDH:
        return "PDH key";
    }
    return "?";
}

std::string ChainError::message() const
{
    std::string m(chain_link_name(link));
    m += ": ";
    m += cert_error_name(error);
    return m;
}

static Result<void, ChainError> link(ChainLink l, Result<void, CertError> r)
{
    if (!r)
        return make_unexpected(ChainError { l, r.error() });
    return {};
}

Result<ChainReport, ChainError> verify_chain(SevChain const& chain, bool require_amd)
{
    ChainReport report;
    bool have_amd = chain.ark && chain.ask && chain.cek;
    if (require_amd && !have_amd)
        return make_unexpected(ChainError { chain.ark ? (chain.ask ? ChainLink::ASK_CEK : ChainLink::ARK_ASK) : ChainLink::ARK,
            CertError::Missing });
    if (have_amd) {
        // Root first (SEV-KM 55766 chain order; AMD-ASPFW SEND_START validates ARK, ASK, CEK, PEK, PDH).
        TRY(link(ChainLink::ARK, chain.ark->verify(*chain.ark)));
        TRY(link(ChainLink::ARK_ASK, chain.ask->usage() == AmdKeyUsage::ASK ? chain.ask->verify(*chain.ark)
                                                                             : Result<void, CertError>(make_unexpected(CertError::BadUsage))));
        TRY(link(ChainLink::ASK_CEK, sev_cert_validate(*chain.cek, *chain.ask)));
        TRY(link(ChainLink::CEK_PEK, sev_cert_validate(chain.pek, *chain.cek)));
        report.amd_rooted = true;
        report.amd_product = known_ark_product(chain.ark->key_id());
    }
    TRY(link(ChainLink::OCA, sev_cert_validate(chain.oca, chain.oca)));
    TRY(link(ChainLink::OCA_PEK, sev_cert_validate(chain.pek, chain.oca)));
    TRY(link(ChainLink::PEK_PDH, sev_cert_validate(chain.pdh, chain.pek)));
    // The PDH is what the guest owner will run ECDH against: it must be a P-384 ECDH key.
    auto pdh_usage = chain.pdh.usage();
    auto pdh_algo = chain.pdh.algo();
    if (!pdh_usage || *pdh_usage != SevUsage::PDH)
        return make_unexpected(ChainError { ChainLink::PDH, CertError::BadUsage });
    if (!pdh_algo || !sev_algo_is_ecdh(*pdh_algo))
        return make_unexpected(ChainError { ChainLink::PDH, CertError::BadAlgo });
    return report;
}

} // namespace sevemu::firmware
