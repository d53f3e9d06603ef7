require "rails"
require "active_record/railtie"
require "action_controller/railtie"
require "action_view/railtie"
require "action_mailer/railtie"
require "action_cable/engine"
require "devise"

module NoteSite
  class Application < Rails::Application
    config.load_defaults 6.1
    config.root = File.expand_path("..", __dir__)
    config.eager_load = true
    config.cache_classes = true
    config.consider_all_requests_local = ENV["RAILS_ENV"] == "development"
    config.secret_key_base = ENV.fetch("SECRET_KEY_BASE")
    config.logger = ActiveSupport::Logger.new($stdout)
    config.log_level = :info
    config.active_record.schema_format = :ruby
    # Rails 6.1 checks Host and X-Forwarded-Host alike: behind the router,
    # Host is the app's own and X-Forwarded-Host the public site's, so both
    # are listed (RAILS_HOSTS), or health checks and requests get 403.
    config.hosts = ENV["RAILS_HOSTS"].split(",") if ENV["RAILS_HOSTS"]
    # ActionCable compares Origin with the Host the app sees: behind the
    # router, the public origin must be listed.
    config.action_cable.allowed_request_origins = ENV["CABLE_ORIGINS"].to_s.split(",")
    config.action_cable.mount_path = "/cable"
    config.action_cable.cable = { "adapter" => "async" }
  end
end
