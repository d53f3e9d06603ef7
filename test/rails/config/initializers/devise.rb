Devise.setup do |config|
  require "devise/orm/active_record"
  config.mailer_sender = "app@example.com"
  config.secret_key = ENV.fetch("SECRET_KEY_BASE")
  config.stretches = 1
  config.sign_out_via = :delete
  config.navigational_formats = ["*/*", :html]
end
