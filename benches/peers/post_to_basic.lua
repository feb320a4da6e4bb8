-- The do-it-yourself peer of tokengate's `to_basic`: nginx + this access_by_lua_file script turn
-- a client_secret_post token request into client_secret_basic (RFC 6749 §2.3.1: form-urlencode the
-- client_id and the secret, join them with ':', base64), and remove both from the body.
-- Deliberately small (what an operator would write): no checks beyond "both present once".
local function form_decode(s)
  return ngx.unescape_uri((s:gsub("%+", " ")))
end

local function form_encode(s) -- application/x-www-form-urlencoded, as RFC 6749 Appendix B says
  local encoded = s:gsub("[^%w%*%-%._ ]", function(c) return string.format("%%%02X", c:byte()) end)
  return (encoded:gsub(" ", "+"))
end

if ngx.req.get_method() ~= "POST" or ngx.var.http_authorization then return end
ngx.req.read_body()
local body = ngx.req.get_body_data() -- nil when empty, or when it spilled to a temp file
if not body then return end

local keep, id, secret = {}, nil, nil
for piece in body:gmatch("[^&]+") do
  local name, value = piece:match("^([^=]*)=?(.*)$")
  if name == "client_id" then id = value
  elseif name == "client_secret" then secret = value
  else keep[#keep + 1] = piece end
end
if not (id and secret) then return end

local credentials = form_encode(form_decode(id)) .. ":" .. form_encode(form_decode(secret))
ngx.req.set_header("Authorization", "Basic " .. ngx.encode_base64(credentials))
ngx.req.set_body_data(table.concat(keep, "&")) -- also sets Content-Length
