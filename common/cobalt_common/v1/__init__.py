"""Generated wire types for cobalt.v1; rebuilt by scripts/gen-protos. Do not edit."""
