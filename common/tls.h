// gRPC credentials from a TlsConfig. Plaintext is only ever chosen when the
// caller passes insecure_plaintext explicitly.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "fairwatch/v1/config.pb.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace fairwatch {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const v1::TlsConfig& tls, bool insecure_plaintext);

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const v1::TlsConfig& tls, bool insecure_plaintext);

// Reads a whole file; used for PEM material.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace fairwatch
