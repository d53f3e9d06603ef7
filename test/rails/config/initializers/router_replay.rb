# The kit under test: exactly the file an app drops into
# config/initializers/, loaded when ROUTER_KIT=1.
if ENV["ROUTER_KIT"] == "1"
  load File.expand_path("../../../../contrib/rails/router_replay.rb", __dir__)
end
