//! The Lambda binary; everything it does is in [`scim_relay::lambda`].

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    scim_relay::lambda::runtime::run().await
}
