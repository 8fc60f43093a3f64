//! Server reflection, `grpc.reflection.v1` and `v1alpha` (`ServerReflectionInfo`, a bidi
//! stream), answered from an encoded `FileDescriptorSet` such as the one `build.rs` keeps.
//!
//! Tools (grpcurl, grpcui, Postman, grpcio-reflection) use it to call a server without its
//! .proto files. The two versions are the same messages under two package names, so both paths
//! are served with the v1 types: the bytes on the wire are identical.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use futures_util::stream;
use prost::Message as _;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};

use crate::grpc::{
    error::Error,
    method::{BidiStreaming, Method},
    recv::Streaming,
    request::{Request, Response},
    server::Router,
    status::{Code, Status},
};

/// The generated `grpc.reflection.v1` messages.
pub mod pb {
    #![allow(missing_docs, clippy::all, unreachable_pub, unused_qualifications)]
    include!(concat!(env!("OUT_DIR"), "/grpc.reflection.v1.rs"));
}

use pb::{
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    ErrorResponse, FileDescriptorResponse, ListServiceResponse, ServerReflectionRequest,
    ServerReflectionResponse, ServiceResponse,
};

/// The v1 method.
pub const V1: Method<ServerReflectionRequest, ServerReflectionResponse, BidiStreaming> =
    Method::bidi_streaming("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
/// The v1alpha method, still the only one some tools speak.
pub const V1ALPHA: Method<ServerReflectionRequest, ServerReflectionResponse, BidiStreaming> =
    Method::bidi_streaming("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo");

/// A reflection service over one descriptor set.
#[derive(Clone, Debug)]
pub struct Reflection {
    index: Arc<Index>,
}

#[derive(Debug, Default)]
struct Index {
    /// File name -> (encoded FileDescriptorProto, the names of its direct dependencies).
    files: HashMap<String, (Bytes, Vec<String>)>,
    /// Fully-qualified symbol (package.Message, package.Service.Method, ...) -> file name.
    symbols: HashMap<String, String>,
    /// Services listed by `list_services`.
    services: Vec<String>,
}

impl Reflection {
    /// Indexes an encoded `FileDescriptorSet`. `services` are the names to list (those the
    /// server really serves); empty means every service in the set.
    ///
    /// # Errors
    /// A configuration error when the bytes are not a descriptor set.
    pub fn new(descriptor_set: &[u8], services: &[&str]) -> Result<Self, Error> {
        let set = FileDescriptorSet::decode(descriptor_set)
            .map_err(|e| Error::config("invalid file descriptor set").with(e))?;
        let mut index = Index::default();
        for file in &set.file {
            index.add(file);
        }
        if !services.is_empty() {
            index.services = services.iter().map(|s| (*s).to_owned()).collect();
        }
        index.services.sort();
        Ok(Self {
            index: Arc::new(index),
        })
    }

    /// A router serving both reflection versions.
    pub fn router(&self) -> Router {
        let v1 = self.clone();
        let v1alpha = self.clone();
        Router::new()
            .bidi_streaming(
                &V1,
                move |req: Request<Streaming<ServerReflectionRequest>>| {
                    let reflection = v1.clone();
                    async move { Ok(reflection.serve(req)) }
                },
            )
            .bidi_streaming(
                &V1ALPHA,
                move |req: Request<Streaming<ServerReflectionRequest>>| {
                    let reflection = v1alpha.clone();
                    async move { Ok(reflection.serve(req)) }
                },
            )
    }

    fn serve(
        &self,
        request: Request<Streaming<ServerReflectionRequest>>,
    ) -> Response<impl futures_core::Stream<Item = Result<ServerReflectionResponse, Status>>> {
        let index = self.index.clone();
        let requests = request.into_inner();
        Response::new(stream::unfold(requests, move |mut requests| {
            let index = index.clone();
            async move {
                match requests.message().await {
                    Ok(Some(request)) => Some((Ok(index.answer(request)), requests)),
                    Ok(None) => None,
                    Err(status) => Some((Err(status), requests)),
                }
            }
        }))
    }
}

impl Index {
    fn add(&mut self, file: &FileDescriptorProto) {
        let name = file.name().to_owned();
        let package = file.package();
        let prefix = if package.is_empty() {
            String::new()
        } else {
            format!("{package}.")
        };
        for message in &file.message_type {
            self.add_message(&prefix, message, &name);
        }
        for e in &file.enum_type {
            self.add_enum(&prefix, e, &name);
        }
        for service in &file.service {
            let service_name = format!("{prefix}{}", service.name());
            for method in &service.method {
                self.symbols
                    .insert(format!("{service_name}.{}", method.name()), name.clone());
            }
            self.services.push(service_name.clone());
            self.symbols.insert(service_name, name.clone());
        }
        for extension in &file.extension {
            self.symbols
                .insert(format!("{prefix}{}", extension.name()), name.clone());
        }
        self.files.insert(
            name,
            (Bytes::from(file.encode_to_vec()), file.dependency.clone()),
        );
    }

    fn add_message(&mut self, prefix: &str, message: &DescriptorProto, file: &str) {
        let full = format!("{prefix}{}", message.name());
        let nested = format!("{full}.");
        for inner in &message.nested_type {
            self.add_message(&nested, inner, file);
        }
        for e in &message.enum_type {
            self.add_enum(&nested, e, file);
        }
        self.symbols.insert(full, file.to_owned());
    }

    fn add_enum(&mut self, prefix: &str, e: &EnumDescriptorProto, file: &str) {
        self.symbols
            .insert(format!("{prefix}{}", e.name()), file.to_owned());
    }

    fn answer(&self, request: ServerReflectionRequest) -> ServerReflectionResponse {
        let response = match &request.message_request {
            Some(MessageRequest::FileByFilename(name)) => self.file_with_deps(name),
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                let symbol = symbol.trim_start_matches('.');
                match self.symbols.get(symbol) {
                    Some(file) => self.file_with_deps(file),
                    None => error(Code::NotFound, format!("symbol {symbol:?} not found")),
                }
            }
            Some(MessageRequest::ListServices(_)) => {
                MessageResponse::ListServicesResponse(ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|name| ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
            Some(
                MessageRequest::FileContainingExtension(_)
                | MessageRequest::AllExtensionNumbersOfType(_),
            ) => error(Code::Unimplemented, "extensions are not indexed".to_owned()),
            None => error(Code::InvalidArgument, "empty reflection request".to_owned()),
        };
        ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(response),
        }
    }

    /// The file and everything it imports, transitively, the file itself first.
    fn file_with_deps(&self, name: &str) -> MessageResponse {
        if !self.files.contains_key(name) {
            return error(Code::NotFound, format!("file {name:?} not found"));
        }
        let mut order = Vec::new();
        let mut pending = vec![name.to_owned()];
        while let Some(next) = pending.pop() {
            if order.contains(&next) {
                continue;
            }
            if let Some((_, deps)) = self.files.get(&next) {
                pending.extend(deps.iter().rev().cloned());
                order.push(next);
            }
        }
        MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
            file_descriptor_proto: order.iter().map(|n| self.files[n].0.clone()).collect(),
        })
    }
}

fn error(code: Code, message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(ErrorResponse {
        error_code: code.as_i32(),
        error_message: message,
    })
}
