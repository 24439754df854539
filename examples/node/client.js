// A client of the shop in Node.js (@grpc/grpc-js + @grpc/proto-loader), loading the protos
// of this repository: protos/shop/v1 and the vendored google/rpc ones for error details.
//
//   cd examples/node && npm install
//   node client.js [--write 127.0.0.1:50051] [--read 127.0.0.1:50052] [--token TOKEN]
//
// Creates a product and a customer, places an order, reads it back from the Redis
// projection with the write's consistency token (read-your-writes), then sends a bad
// CreateProduct and prints the field violations decoded from `grpc-status-details-bin`.
// Prints one JSON object per line; exits 1 on an unexpected failure.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const ROOT = path.resolve(__dirname, "..", "..");
const INCLUDES = [path.join(ROOT, "protos"), path.join(ROOT, "third_party", "googleapis")];

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : fallback;
}

// keepCase: fields keep their proto names (price_cents, consistency_token), as in the docs.
const definition = protoLoader.loadSync(
  ["shop/v1/command_service.proto", "shop/v1/query_service.proto"],
  { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: INCLUDES },
);
const shop = grpc.loadPackageDefinition(definition).shop.v1;

// google.rpc.Status and its details, decoded with protobufjs from the vendored protos.
const rpc = new protobuf.Root();
rpc.resolvePath = (origin, target) => {
  for (const dir of INCLUDES) {
    const candidate = path.join(dir, target);
    if (require("fs").existsSync(candidate)) return candidate;
  }
  return protobuf.util.path.resolve(origin, target); // google/protobuf/*: protobufjs's own
};
rpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = rpc.lookupType("google.rpc.Status");

function violations(error) {
  const raw = error.metadata && error.metadata.get("grpc-status-details-bin")[0];
  if (!raw) return [];
  const found = [];
  for (const any of Status.decode(raw).details) {
    const typeName = any.type_url.split("/").pop();
    if (typeName !== "google.rpc.BadRequest") continue;
    const badRequest = rpc.lookupType(typeName).decode(any.value);
    for (const v of badRequest.field_violations) found.push({ field: v.field, description: v.description });
  }
  return found;
}

function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 10000 }, (error, reply) =>
      error ? reject(error) : resolve(reply),
    );
  });
}

async function main() {
  const credentials = grpc.credentials.createInsecure();
  const commands = new shop.CommandService(option("write", "127.0.0.1:50051"), credentials);
  const queries = new shop.QueryService(option("read", "127.0.0.1:50052"), credentials);
  const metadata = new grpc.Metadata();
  const token = option("token", process.env.CQRS_CLIENT_TOKEN || "");
  if (token) metadata.set("authorization", `Bearer ${token}`);
  const show = (what, value) => console.log(JSON.stringify({ [what]: value }));

  const product = await call(commands, "CreateProduct",
    { name: "Mug", price_cents: 1299, currency: "EUR", category: "kitchen", stock: 10 }, metadata);
  show("product", product);
  const customer = await call(commands, "CreateCustomer",
    { name: "Ann", email: `ann.${Date.now()}@example.org` }, metadata);
  show("customer", customer);
  const order = await call(commands, "PlaceOrder",
    { customer_id: customer.id, items: [{ product_id: product.id, quantity: 2 }] }, metadata);
  show("order", order);
  // Read-your-writes: the projection answers once it holds the order (or UNAVAILABLE).
  const read = await call(queries, "GetOrder",
    { id: order.id, source: "SOURCE_PROJECTION", consistency_token: order.consistency_token }, metadata);
  show("read", { id: read.id, status: read.status, total_cents: read.total_cents, items: read.items.length });

  try {
    await call(commands, "CreateProduct", { name: "", price_cents: -5, currency: "EURO" }, metadata);
    throw new Error("a bad CreateProduct was accepted");
  } catch (error) {
    if (error.code !== grpc.status.INVALID_ARGUMENT) throw error;
    show("rejected", { code: "INVALID_ARGUMENT", violations: violations(error) });
  }
  commands.close();
  queries.close();
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
