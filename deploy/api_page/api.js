// Swagger UI over the OpenAPI document this server makes from the contract
// (openapi.json, beside this page). The document's `servers` name the edge,
// so "Try it out" calls the real API.
window.addEventListener("load", () => {
  window.SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#api",
    deepLinking: true,
    // Never send the document to validator.swagger.io.
    validatorUrl: null,
  });
});
