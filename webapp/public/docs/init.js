// Renders the server's own OpenAPI document (GET /api/v1/openapi.json) with
// Swagger UI. The token the web UI keeps (localStorage, or ?token= on this
// page's address) is sent with the document request and offered to "Try it
// out", so the page works on a server with API tokens on.
(function () {
  var KEY = 'ifc_token';
  var url = new URL(window.location.href);
  var fromURL = url.searchParams.get('token');
  if (fromURL !== null) {
    try { localStorage.setItem(KEY, fromURL.trim()); } catch (e) { /* storage unavailable */ }
    url.searchParams.delete('token');
    window.history.replaceState(null, '', url.pathname + url.search + url.hash);
  }
  var token = fromURL !== null ? fromURL.trim() : '';
  if (!token) {
    try { token = localStorage.getItem(KEY) || ''; } catch (e) { /* storage unavailable */ }
  }
  var ui = window.SwaggerUIBundle({
    url: '/api/v1/openapi.json',
    dom_id: '#api-docs',
    deepLinking: true,
    persistAuthorization: false,
    requestInterceptor: function (req) {
      if (token && !req.headers.Authorization) req.headers.Authorization = 'Bearer ' + token;
      return req;
    },
    onComplete: function () {
      if (token) ui.preauthorizeApiKey('bearer', token);
    },
  });
})();
